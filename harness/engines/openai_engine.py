"""Any OpenAI-compatible endpoint (OpenAI, a vLLM or llama.cpp server) through ``harness.openai_client``.

The scale-out path for trained LoRA adapters: serve the base model with its adapters, e.g.

    vllm serve BASE --enable-lora --lora-modules srpo=runs/RUN/train/srpo/adapter dpo=runs/RUN/train/dpo/adapter

and point the harness at it with ``--engine openai --engine-arg base_url=http://HOST:8000/v1
--engine-arg model=BASE --engine-arg adapter_models.runs/RUN/train/srpo/adapter=srpo ...``.
Before generating, every model name the run will request is checked against the server's
``/v1/models``: a server that answered an unknown name with its base model would otherwise label
base-model text as the trained method's.

Prompts are built with the run's model's tokenizer (``prompt_tokenizer: auto``): a source is cut to
the same tokens as in training and in the local engines, so a served adapter sees the prompts it
would see in-process (with words standing in for tokens, 8 of the offline preset's 16 XSum
prompts were cut later, up to 126 tokens longer). Completion-style tasks (XSum, TL;DR: a prompt
that ends in "TL;DR:") go through the completions API, so the server adds no chat template or
system prompt; chat tasks through the chat API (``api: auto``), the server putting the user turn in
the served model's chat template as the harness would (``api: completions`` sends them in the
template, put there by the harness, less the BOS the server adds itself). Each prompt carries its
own sampling seed. A completion the server ended at a stop string before any text (a model opening
its answer on a new line) is asked again without stop strings and cut here, as the local engines
cut it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from harness.config import NonNegativeInt, Positive, PositiveInt
from harness.engine import Engine, Generation, SamplingParams, cut_server_completion, prompt_seeds, register, stopped_before_text
from harness.errors import HarnessError
from harness.models import load_tokenizer, resolve_model
from harness.openai_client import OPENAI_URL, AdaptiveLimit, BaseURL, Usage, api_key, in_flight, make_client, send, served_models
from harness.prompting import leading_tokens


@register("openai")
@dataclass
class OpenAIEngine(Engine):
    """An OpenAI-compatible server: completions API for completion-style tasks, chat for chat tasks; LoRA adapters by served name."""

    # How requests travel; retries decide whether a completion arrives, not what it says.
    not_in_generations: ClassVar[frozenset[str]] = frozenset({"api_key_env", "concurrency", "max_retries", "timeout"})
    code_version: ClassVar[int] = 1  # 1: a row the server ended at a stop string before any text is asked again (stopped_before_text)

    model: str = ""  # the served base model name (required: the name the server lists at /v1/models)
    base_url: BaseURL = ""  # e.g. http://127.0.0.1:8000/v1 for a vLLM or llama.cpp server; empty: OpenAI
    api: Literal["auto", "chat", "completions"] = "auto"  # auto: completions for completion-style tasks, chat for chat tasks; completions: chat prompts too, in the chat template of prompt_tokenizer
    prompt_tokenizer: str = "auto"  # whose tokenizer builds the prompts (the source's token budget): "auto": the run's model's, whose adapters the server serves; "none": words stand in for tokens (a served model the run does not have); or a local folder or hub id
    api_key_env: str = ""  # the variable holding the key; empty: OPENAI_API_KEY for OpenAI's API and no key for any other server
    concurrency: PositiveInt | Literal["auto"] = "auto"  # requests in flight; "auto": 16 for OpenAI's API, 4 for another server; halves after a timeout
    max_retries: NonNegativeInt = 5  # retries after 429, 5xx, a timeout or a dropped connection (exponential backoff, jitter)
    timeout: Positive = 60.0  # seconds per request
    adapter_models: dict[str, str] = field(default_factory=dict)  # trained adapter folder (or a model trained in full) -> the name the server serves it under

    sets_model = False  # the served name is the user's, never the run's local model path

    def __post_init__(self):
        if self.prompt_tokenizer not in ("auto", "none"):
            try:  # a misspelt folder fails before any work, not at the generation stage
                resolve_model(self.prompt_tokenizer, convert=False)
            except HarnessError as exc:
                raise ValueError(f"option 'prompt_tokenizer' is 'auto', 'none' or a model: {exc}") from None
        self._checked: set[str] = set()
        self.usage = Usage()
        self._run_model: str | None = None  # the run's model this engine generates for (build_engine_for)
        self._trained = False  # whether that model is a method's, trained in full
        self._tokenizer = None

    def use_run_model(self, model: str, trained: bool = False) -> None:
        self._run_model, self._trained = model, trained

    def tokenizer(self):
        """The tokenizer of ``prompt_tokenizer``; None for "none", and for "auto" outside a run."""
        source = {"auto": self._run_model, "none": None}.get(self.prompt_tokenizer, self.prompt_tokenizer)
        if source is not None and self._tokenizer is None:
            self._tokenizer = load_tokenizer(resolve_model(source))
        return self._tokenizer

    @property
    def templated_prompts(self) -> bool:
        return self.api == "completions"  # the completions API gets finished text; the chat API's server templates the user turn

    @property
    def in_flight(self) -> int:
        return in_flight(self.concurrency, self.base_url, for_openai=16)

    def check_access(self) -> None:
        self._served_model(None)  # raises when the base model's name is missing
        api_key(self.api_key_env, self.base_url)  # raises when the key it needs is not in the environment

    @property
    def chunk_size(self) -> int:
        return 4 * self.in_flight  # requests queue behind the limit: the server never waits on a chunk boundary

    def _served_model(self, adapter: str | None) -> str:
        """The served name of what a method trained: its adapter, or its model trained in full;
        the base model's (``model``) for the run's base."""
        if not self.model:
            raise HarnessError("engine 'openai' needs the served base model's name: --engine-arg model=NAME (as the server's /v1/models lists it)")
        trained = adapter or (self._run_model if self._trained else None)
        if trained is None:
            return self.model
        if trained not in self.adapter_models:
            how = f"vllm serve BASE --enable-lora --lora-modules NAME={trained}" if adapter else f"vllm serve {trained} --served-model-name NAME"
            raise HarnessError(f"engine 'openai' has no served name for the {'adapter' if adapter else 'model trained in full'} {trained!r}: "
                               f"serve it ({how}) and pass --engine-arg adapter_models.{trained}=NAME")  # fmt: skip
        return self.adapter_models[trained]

    async def _check_served(self, client, name: str) -> None:
        if name in self._checked:
            return
        listed = await served_models(client)
        if name not in listed:
            raise HarnessError(f"the server at {self.base_url or OPENAI_URL} does not list the model {name!r} (it lists: {', '.join(listed) or 'none'}); "
                               "a server that answers unknown names with its base model would label base-model text as the method's")  # fmt: skip
        self._checked.add(name)

    def _without_servers_lead(self, prompts: list[str]) -> list[str]:
        """Chat prompts templated here for the completions API, less the special tokens that the
        server's tokenizer puts before any text (vLLM and llama.cpp's add Llama 3's BOS to a
        completions prompt): the template wrote them, and the model reads them once, as in-process."""
        tokenizer = self.tokenizer()
        lead = tokenizer.decode(leading_tokens(tokenizer, templated=False)) if tokenizer is not None else ""
        return [p.removeprefix(lead) for p in prompts] if lead else prompts

    def generate(self, prompts, params: SamplingParams, adapter=None, stop=(), seeds=None, chat: bool = False) -> list[Generation]:
        endpoint = self.api if self.api != "auto" else ("chat" if chat else "completions")
        if chat and endpoint == "completions":
            prompts = self._without_servers_lead(prompts)
        return asyncio.run(self._generate_all(prompts, params, self._served_model(adapter), stop, prompt_seeds(params, len(prompts), seeds), endpoint))

    async def _generate_all(self, prompts, params, model, stop, seeds, endpoint):
        limit = AdaptiveLimit(self.in_flight)
        async with make_client(self.base_url, self.api_key_env, self.timeout) as client:
            await self._check_served(client, model)

            async def ask(prompt: str, seed: int, stops: tuple[str, ...]) -> tuple[str, str | None, dict]:
                request = {"model": model, "max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
                           "seed": seed, "stop": list(stops) or None,
                           **({"messages": [{"role": "user", "content": prompt}]} if endpoint == "chat" else {"prompt": prompt})}  # fmt: skip
                body, error = await send(client, endpoint, request, limit, self.usage, self.max_retries, self.api_key_env, "--task-arg max_source_tokens=N")
                if body is None:
                    raise HarnessError(f"engine 'openai' ({self.base_url or OPENAI_URL}, model {model!r}): {error}")
                choice = (body.get("choices") or [{}])[0]
                raw = (choice.get("message") or {}).get("content") if endpoint == "chat" else choice.get("text")
                return raw or "", choice.get("finish_reason"), body.get("usage") or {}

            async def one(prompt: str, seed: int) -> Generation:
                raw, finish, usage = await ask(prompt, seed, stop)
                if stopped_before_text(raw, finish, stop):  # it opened on a stop string: the text after it, as cut here
                    raw, finish, usage = await ask(prompt, seed, ())
                text, finish = cut_server_completion(raw, finish, stop)
                return Generation(text, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, finish)

            return list(await asyncio.gather(*(one(p, s) for p, s in zip(prompts, seeds))))
