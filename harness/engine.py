"""What a generation engine is: prompts in, completions out, with the sampling recorded.

An engine sees finished prompt texts (``harness.prompting`` has already applied the task's
templates, the token budget and any chat template) and an optional adapter per call, so the same
revision loop drives a local model, vLLM or any OpenAI-compatible server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, ClassVar

from pydantic import Field

from harness import registry
from harness.config import NonNegative, NonNegativeInt, Options, PositiveInt
from harness.errors import HarnessError
from harness.plugin import Plugin


@dataclass(frozen=True)
class SamplingParams(Options):
    temperature: NonNegative = 0.0  # 0: greedy decoding
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0  # nucleus sampling mass (ignored when greedy)
    max_new_tokens: PositiveInt = 64  # completion budget (XSum summaries are one sentence)
    seed: NonNegativeInt = 0  # seeds sampling; each chunk of a generation derives its own seed from it

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@dataclass
class Engine(Plugin):
    """Base of the engines; subclasses are dataclasses whose fields are their options."""

    sets_model: ClassVar[bool] = True  # the run's model (base, SFT or trained) is this engine's ``model`` option
    # Options that change how completions are computed or fetched (batch sizes, retries, the
    # device), never what they say: they alone are left out of the engine's identity.
    not_in_generations: ClassVar[frozenset[str]] = frozenset()
    sampler: ClassVar[str | None] = None  # how the harness draws a sampled token, where it does (not a server): sampled completions' keys hold it

    def generate(
        self, prompts: list[str], params: SamplingParams, adapter: str | None = None, stop: tuple[str, ...] = (), seeds: list[int] | None = None,
        chat: bool = False,
    ) -> list[Generation]:
        """One completion per prompt. ``seeds`` gives each prompt's sampling seed (so a sampled
        text does not depend on the batch it ran in); None: ``params.seed`` plus its index.
        ``chat``: the prompts are user turns of a chat task (an API engine sends them as chat
        messages; local engines get them already wrapped in the model's chat template)."""
        raise NotImplementedError

    def check_sampling(self, params: SamplingParams) -> None:
        """Raise ``HarnessError`` if this engine, as configured, cannot decode with ``params``:
        called when a run is resolved, before any work, and by ``generate``."""

    def check_access(self) -> None:
        """Raise ``HarnessError`` if what this engine needs from outside the process is missing (an
        API key, an optional package, the name of the model a server serves): called before a run's
        work, so that hours of training do not end at the engine."""

    def settled_options(self) -> dict:
        """Options whose "auto" this machine settles and the texts depend on (the precision on a
        GPU or a CPU), as settled here."""
        return {}

    def describe_config(self, sampling: SamplingParams | None = None) -> dict:
        """What identifies this engine's completions (keys the run's generations and built pairs):
        its name and every option but ``not_in_generations``, "auto" as this machine settles it,
        so that an option an engine gains is part of the key unless it is declared not to change
        texts; and, for completions sampled with ``sampling`` (greedy ones draw nothing), the
        engine's ``sampler``. The model an engine loads for the run is left out: the candidate's
        key holds it."""
        left_out = self.not_in_generations | ({"model"} if self.sets_model else set())
        drawn = {"sampler": self.sampler} if self.sampler and sampling is not None and not sampling.greedy else {}
        return {"engine": self.registered_name, **self.options_but(left_out), **self.settled_options(), **drawn}

    def tokenizer(self):
        """The tokenizer prompts are built for (the source's token budget, the chat template), or
        None: words stand in for tokens."""
        return None

    @property
    def templated_prompts(self) -> bool:
        """Whether a chat task's prompts reach this engine in the model's chat template, applied by
        the harness (local engines), rather than as bare user turns that a server templates."""
        return True

    def prompt_formatter(self, task, mode: str = "auto"):
        """How this engine's prompts for ``task`` are built (``mode``: a trainer's prompt_format)."""
        from harness.prompting import PromptFormatter

        return PromptFormatter(task, self.tokenizer(), mode, self.templated_prompts)

    def use_run_model(self, model: str, trained: bool = False) -> None:
        """The run's model (a local folder or hub id) that this engine generates for, where the
        engine serves models by name (``sets_model`` false) and so does not load it; ``trained``:
        a method's model trained in full, which a server serves under a name of its own."""

    @property
    def chunk_size(self) -> int:
        """Prompts per generate() call of the revision loop: enough to keep the engine busy, few
        enough that each chunk's completions are saved soon."""
        return 16

    def close(self) -> None:
        """Free what the engine holds (models, connections)."""


def prompt_seeds(params: SamplingParams, n: int, seeds: list[int] | None) -> list[int]:
    return list(seeds) if seeds is not None else [params.seed + i for i in range(n)]


def check_context(encoded: list[list[int]], new_tokens: int, limit: int | None, where: str, remedy: str) -> None:
    """Every prompt (token ids) and its ``new_tokens`` fit ``limit`` positions (``where`` names
    them): a model's (``harness.models.positions``), or vLLM's max_model_len, past which a prompt
    is refused and a completion cut short."""
    longest = max(map(len, encoded), default=0)
    if limit and longest + new_tokens > limit:
        over = sum(len(p) + new_tokens > limit for p in encoded)
        raise HarnessError(f"{over} of {len(encoded)} prompts (the longest {longest} tokens) and --max-new-tokens {new_tokens} run past "
                           f"{where}: {remedy}; completions already written are kept")  # fmt: skip


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """The text up to the first stop string (leading whitespace ignored), and whether one was hit."""
    stripped = text.lstrip()
    cut = min((i for i in (stripped.find(s) for s in stop if s) if i >= 0), default=-1)
    return (stripped[:cut], True) if cut >= 0 else (stripped, False)


def stopped_before_text(text: str, finish_reason: str | None, stop: tuple[str, ...]) -> bool:
    """Whether a server that applies the stop strings itself (vLLM, llama.cpp's, OpenAI's) ended a
    completion at one before any text: servers match from the first character, so a completion
    that opens on a new line comes back empty, where ``cut_at_stop`` skips leading whitespace and
    keeps the line after it. The engines ask such a row again without stop strings (same prompt
    and seed) and cut it here, so that every engine gives a prompt the same text."""
    return bool(stop) and finish_reason == "stop" and not text.strip()


def cut_server_completion(text: str, finish_reason: str | None, stop: tuple[str, ...]) -> tuple[str, str]:
    """A server's completion cut at the stop strings as every engine cuts it, and how it ended:
    "length" only where the token budget ran out before a stop string."""
    cut, hit = cut_at_stop(text, stop)
    return cut.strip(), "length" if finish_reason == "length" and not hit else "stop"


def build_engine(name: str, options: dict | None = None) -> Engine:
    from harness.config import build_options

    return build_options(registry.engines.get(name), options or {}, what=f"engine {name!r}")


def build_engine_for(name: str, options: dict, model: str, trained: bool = False) -> Engine:
    """Engine ``name`` loading ``model`` (``trained``: a method's model trained in full, not the
    base); an engine serving models by name (an API) takes the user's ``model`` option as given and
    is told ``model`` (``use_run_model``)."""
    if registry.engines.get(name).sets_model:
        return build_engine(name, {**options, "model": model})
    engine = build_engine(name, options)
    engine.use_run_model(model, trained)
    return engine


register = registry.engines.register
