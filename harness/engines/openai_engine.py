"""Any OpenAI-compatible endpoint (OpenAI, a vLLM or llama.cpp server) through the ``openai`` package.

Requests run concurrently under a limit; the client's own retry loop (exponential backoff with
jitter on 429, 5xx, timeouts and dropped connections) does the retrying. The API key is read from
the environment variable named by ``api_key_env`` and never stored.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from harness.engine import Engine, Generation, SamplingParams, cut_at_stop, prompt_seeds, register
from harness.errors import HarnessError


def api_key(env_name: str, base_url: str | None) -> str:
    key = os.environ.get(env_name)
    if key:
        return key
    if base_url:  # a local server usually wants no key, but the client insists on one
        return "not-needed"
    raise HarnessError(f"no API key: set the environment variable {env_name} (it is read from the environment only)")


@register("openai")
@dataclass
class OpenAIEngine(Engine):
    """An OpenAI-compatible server: chat or completions API, concurrent, with retries and backoff."""

    model: str = "gpt-4o-mini"  # the served model name
    base_url: str = ""  # e.g. http://127.0.0.1:8000/v1 for a vLLM or llama.cpp server; empty: OpenAI
    api: Literal["chat", "completions"] = "chat"  # "chat": the prompt is one user message; "completions": the prompt text as is
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key
    concurrency: Annotated[int, Field(ge=1)] = 16  # requests in flight at once
    max_retries: Annotated[int, Field(ge=0)] = 5  # the client's retries on 429, 5xx and timeouts (exponential backoff, jitter)
    timeout: Annotated[float, Field(gt=0)] = 60.0  # seconds per request
    adapter_models: dict[str, str] = field(default_factory=dict)  # trained adapter folder -> the name the server serves it under

    chat_native = True

    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=api_key(self.api_key_env, self.base_url or None), base_url=self.base_url or None,
            max_retries=self.max_retries, timeout=self.timeout,
        )  # fmt: skip

    @property
    def chunk_size(self) -> int:
        return 4 * self.concurrency  # requests queue behind the limit: the server never waits on a chunk boundary

    def _served_model(self, adapter: str | None) -> str:
        if adapter is None:
            return self.model
        if adapter not in self.adapter_models:
            raise HarnessError(f"engine 'openai' cannot load adapter {adapter!r}: serve it (e.g. vllm --lora-modules) and map it with --engine-arg adapter_models.{adapter}=NAME")
        return self.adapter_models[adapter]

    def generate(self, prompts, params: SamplingParams, adapter=None, stop=(), seeds=None) -> list[Generation]:
        return asyncio.run(self._generate_all(prompts, params, self._served_model(adapter), stop, prompt_seeds(params, len(prompts), seeds)))

    async def _generate_all(self, prompts, params, model, stop, seeds):
        from openai import APIError

        limit = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:

            async def one(prompt: str, seed: int) -> Generation:
                async with limit:
                    common = dict(model=model, max_tokens=params.max_new_tokens, temperature=params.temperature,
                                  top_p=params.top_p, seed=seed, stop=list(stop) or None)  # fmt: skip
                    try:
                        if self.api == "chat":
                            response = await client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)
                            raw = response.choices[0].message.content or ""
                        else:
                            response = await client.completions.create(prompt=prompt, **common)
                            raw = response.choices[0].text or ""
                    except APIError as exc:
                        raise HarnessError(f"the server at {self.base_url or 'api.openai.com'} failed after {self.max_retries} retries: {exc}") from None
                    text, _ = cut_at_stop(raw, stop)
                    usage = response.usage
                    return Generation(text.strip(), getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0,
                                      "length" if response.choices[0].finish_reason == "length" else "stop")  # fmt: skip

            return list(await asyncio.gather(*(one(p, s) for p, s in zip(prompts, seeds))))
