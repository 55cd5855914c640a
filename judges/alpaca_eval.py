"""Any AlpacaEval annotator, run from AlpacaEval's own files: the paper's judge.

The paper judged TL;DR and XSum with AlpacaFarm's GPT-4 annotator (``alpaca_farm_greedy_gpt4``)
and gpt-4-0613 (Sec. 6, Appendix C.3). AlpacaEval (Dubois et al.; Apache-2.0) ships every one of
its annotators as data: ``evaluators_configs/NAME/configs.yaml`` names the prompt template, the
number of comparisons per request, the model and its sampling, and the parser of the answer. This
judge reads those files, from the installed ``alpaca-eval`` package (found, never imported: its
own import pulls heavy dependencies) or from a folder of the same layout, and runs them through
the harness's own client, cache, position protocol, retries and cost accounting.

Supported parsers: ``regex_parser`` (the default; AlpacaFarm's "Output (a)/(b)" lines, five per
request), ``logprob_parser`` (the verdict weighted by the log-probabilities of the answer tokens,
as ``weighted_alpaca_eval_gpt4_turbo`` does; it also rescues small local judges that rarely write
a verdict line), ``ranking_parser`` and ``json_parser``. AlpacaEval's preference is 1 (output_1)
to 2 (output_2); here p(A better) = 2 - preference.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.datasources import package_file
from harness.judge import Comparison, register
from harness.judges.api import APIJudge, answer_logprobs, answer_text
from harness.openai_client import OPENAI_URL

PACKAGE = "alpaca_eval"
SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "logprobs", "top_logprobs", "stop", "seed")
IGNORED_PROCESSORS = {"RandomSwitchTwoColumnsProcessor"}  # position randomisation: the harness's both-orders protocol does it
REMINDERS = {
    "regex_parser": "Answer with one line per example, in order, each exactly as the examples above show it, and nothing else.",
    "ranking_parser": "Answer with the Python list of rankings only, exactly in the format above.",
    "json_parser": "Answer with the JSON object only, exactly in the format above.",
    "logprob_parser": "Answer with the identifier only.",
}


def locate(annotator: str) -> Path:
    """The folder of annotator ``annotator``: a folder path, or a config of the installed package."""
    folder = Path(annotator).expanduser()
    if (folder / "configs.yaml").is_file():
        return folder
    found = package_file(PACKAGE, f"evaluators_configs/{annotator}/configs.yaml")
    if found is not None:
        return found.parent
    if package_file(PACKAGE, "evaluators_configs") is None:
        raise ValueError(f"annotator {annotator!r}: AlpacaEval's configs are not installed (pip install alpaca-eval, or "
                         "pip install 'preference-harness[alpaca-eval]'), and it is no folder holding configs.yaml")  # fmt: skip
    known = sorted(p.name for p in package_file(PACKAGE, "evaluators_configs").iterdir() if (p / "configs.yaml").is_file())
    raise ValueError(f"annotator {annotator!r} is neither a folder holding configs.yaml nor one of AlpacaEval's ({len(known)}, e.g. {', '.join(known[:6])})")


@dataclass(frozen=True)
class Annotator:
    """One AlpacaEval annotator config, read and checked."""

    name: str
    origin: str  # where its files came from, as the manifest and page say it
    template: str  # the prompt template's text
    model: str
    sampling: dict
    parser: str
    parser_kwargs: dict
    batch_size: int
    sha256: str  # of configs.yaml and the template: the files' identity

    @classmethod
    def load(cls, annotator: str) -> "Annotator":
        folder = locate(annotator)
        raw = (folder / "configs.yaml").read_bytes()
        configs = yaml.safe_load(raw)
        if not isinstance(configs, dict) or len(configs) != 1:
            raise ValueError(f"{folder / 'configs.yaml'} must hold one annotator config")
        (name, config), = configs.items()
        where = f"annotator {name!r} ({folder / 'configs.yaml'})"
        if config.get("fn_completions", "openai_completions") != "openai_completions":
            raise ValueError(f"{where} calls {config['fn_completions']!r}; this judge calls OpenAI-compatible servers only (openai_completions)")
        unsupported = set(config.get("processors_to_kwargs") or {}) - IGNORED_PROCESSORS
        if unsupported:
            raise ValueError(f"{where} needs processors {sorted(unsupported)}, which this judge does not run")
        parser = config.get("fn_completion_parser", "regex_parser")
        if parser not in PARSERS:
            raise ValueError(f"{where} parses answers with {parser!r}; supported: {', '.join(PARSERS)}")
        template_path = next((p for p in (folder.parent / config["prompt_template"], folder / Path(config["prompt_template"]).name) if p.is_file()), None)
        if template_path is None:
            raise ValueError(f"{where}: its prompt template {config['prompt_template']!r} is missing")
        template = template_path.read_text(encoding="utf-8")
        kwargs = dict(config.get("completions_kwargs") or {})
        origin = f"alpaca-eval package: evaluators_configs/{folder.name}" if package_file(PACKAGE, f"evaluators_configs/{folder.name}") == folder else str(folder)
        return cls(name, origin, template, kwargs.get("model_name", ""), {k: kwargs[k] for k in SAMPLING_KEYS if k in kwargs}, parser,
                   dict(config.get("completion_parser_kwargs") or {}), int(config.get("batch_size", 1)),
                   hashlib.sha256(raw + template.encode("utf-8")).hexdigest()[:16])  # fmt: skip

    def fill(self, batch: list[Comparison]) -> str:
        """The template with each placeholder's occurrences filled in batch order (AlpacaEval's make_prompts)."""
        prompt = self.template
        for c in batch:
            values = {"instruction": c.source if c.family == "chat" else f"{c.instruction}\n\n{c.source}", "input": "", "output_1": c.a, "output_2": c.b}
            for key, value in values.items():
                prompt = prompt.replace("{" + key + "}", value, 1)
        return prompt


def chatml_messages(prompt: str) -> list[dict]:
    """A ChatML text (<|im_start|>role ... <|im_end|>) as chat messages; plain text as one user turn."""
    if "<|im_start|>" not in prompt:
        return [{"role": "user", "content": prompt.strip()}]
    messages = []
    for part in prompt.strip().split("<|im_start|>")[1:]:
        role, _, content = part.partition("\n")
        role = role.strip()
        message = {"role": "system" if role.startswith("system") else role, "content": content.split("<|im_end|>", 1)[0].strip()}
        if role.startswith("system name="):  # AlpacaEval's few-shot turns: system messages with a name
            message["name"] = role.split("=", 1)[1]
        messages.append(message)
    return messages


def regex_parser(body: dict, outputs_to_match: dict) -> list[float]:
    """AlpacaEval's regex parser: the keys of ``outputs_to_match`` in the order their patterns
    match the answer, each match consumed before the next search."""
    text, out = answer_text(body), []
    patterns = {key: re.compile(pattern) for key, pattern in outputs_to_match.items()}
    while True:
        found = [(m.start(), key, m) for key, p in patterns.items() if (m := p.search(text))]
        if not found:
            return out
        _, key, match = min(found, key=lambda f: f[0])
        out.append(2.0 - float(key))
        text = text[match.end() :]


def logprob_parser(body: dict, numerator_token: str, denominator_tokens: list[str], is_binarize: bool = True, log_prob_index="batch") -> list[float]:
    """p(numerator) / sum p(denominators) from each answer token's top log-probabilities (one
    token per comparison of the batch, or the token at ``log_prob_index``)."""
    tokens = answer_logprobs(body)
    chosen = tokens if log_prob_index == "batch" else tokens[log_prob_index : log_prob_index + 1 or None]
    out = []
    for top in chosen:
        logp = {t["token"]: t["logprob"] for t in top if t["token"] in {numerator_token, *denominator_tokens}}
        if not logp:
            return []  # none of the answer tokens: unparseable, asked again
        numerator = logp.get(numerator_token, -math.inf)
        if is_binarize:
            out.append(float(all(numerator > logp.get(t, -math.inf) for t in denominator_tokens if t != numerator_token)))
        else:
            total = math.log(sum(math.exp(logp.get(t, -math.inf)) for t in denominator_tokens))
            out.append(math.exp(numerator - total))
    return out


def ranking_parser(body: dict, model_1_name: str = "model_1") -> list[float]:
    try:
        ranking = ast.literal_eval(answer_text(body).strip())
        rank = next(int(r["rank"]) for r in ranking if r["model"] == model_1_name)
    except (ValueError, SyntaxError, TypeError, KeyError, StopIteration):
        return []
    return [1.0 if rank == 1 else 0.0]


def json_parser(body: dict, annotation_key: str | None = None) -> list[float]:
    try:
        data = json.loads(answer_text(body).strip().removeprefix("```json").removesuffix("```"))
        values = data if isinstance(data, list) else [data]
        return [2.0 - float(v[annotation_key] if annotation_key else v) for v in values]
    except (ValueError, TypeError, KeyError):
        return []


PARSERS = {"regex_parser": regex_parser, "logprob_parser": logprob_parser, "ranking_parser": ranking_parser, "json_parser": json_parser}


@register("alpaca-eval")
@dataclass
class AlpacaEvalJudge(APIJudge):
    """An AlpacaEval annotator from its own config files (the paper's: alpaca_farm_greedy_gpt4 with gpt-4-0613)."""

    annotator: str = "alpaca_farm_greedy_gpt4"  # an AlpacaEval config name (installed alpaca-eval package) or a folder of the same layout
    model: str = ""  # the served model; empty: the config's model_name

    def __post_init__(self):
        self._annotator = Annotator.load(self.annotator)

    @property
    def batch_size(self) -> int:
        return self._annotator.batch_size

    def served_model(self) -> str:
        return self.model or self._annotator.model

    def describe_config(self) -> dict:
        a = self._annotator
        return {**super().describe_config(), "annotator": a.name, "config": a.origin, "config_sha256": a.sha256, "model": self.served_model(),
                "base_url": self.base_url or OPENAI_URL, "batch_size": a.batch_size, "parser": a.parser, "sampling": a.sampling}  # fmt: skip

    def request(self, batch: list[Comparison], reminder: bool) -> dict:
        messages = chatml_messages(self._annotator.fill(batch))
        if reminder:
            messages.append({"role": "user", "content": REMINDERS[self._annotator.parser]})
        return {"messages": messages, **self._annotator.sampling}

    def parse(self, body: dict, n: int) -> list[tuple[float, str]] | None:
        values = PARSERS[self._annotator.parser](body, **self._annotator.parser_kwargs)
        if len(values) < n or any(not 0 <= v <= 1 for v in values[:n]):
            return None
        answer = answer_text(body)
        return [(v, answer) for v in values[:n]]
