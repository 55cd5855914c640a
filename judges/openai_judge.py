"""A pairwise judge behind any OpenAI-compatible endpoint: OpenAI, a vLLM server, a llama.cpp server.

Requests run concurrently under a limit. Transport failures (429, 5xx, timeouts, dropped
connections) are retried by the ``openai`` client itself with exponential backoff and jitter;
an answer without a parseable verdict is asked again up to ``parse_retries`` times. What still
fails is returned as a failed verdict with its reason, counted in ``stats``, and never scored.
The API key is read from the environment only.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from harness.engines.openai_engine import api_key
from harness.judge import (
    Comparison,
    Judge,
    Verdict,
    prompt_template,
    register,
    render_prompt,
)
from harness.models import cache_dir
from harness.judges.cache import VerdictCache, verdict_key
from harness.judges.parsers import PARSERS

# USD per million tokens (input, output), for the cost line; unknown models cost what you set.
PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "gpt-4-0613": (30.0, 60.0), "gpt-4.1": (2.0, 8.0), "gpt-4.1-mini": (0.4, 1.6)}


@register("openai")
@dataclass
class OpenAIJudge(Judge):
    """A pairwise LLM judge over an OpenAI-compatible API, with retries, a verdict cache and cost accounting."""

    model: str = "gpt-4o"  # the paper: gpt-4-0613 (TL;DR, XSum) and gpt-4o (Arena-Hard)
    base_url: str = ""  # empty: OpenAI; else e.g. http://127.0.0.1:8080/v1
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key
    concurrency: Annotated[int, Field(ge=1)] = 64  # requests in flight at once (the client retries 429s with backoff if a provider wants fewer)
    max_retries: Annotated[int, Field(ge=0)] = 5  # the client's retries on 429, 5xx and timeouts
    timeout: Annotated[float, Field(gt=0)] = 60.0  # seconds per request
    parse_retries: Annotated[int, Field(ge=0)] = 2  # extra asks when an answer holds no verdict
    temperature: Annotated[float, Field(ge=0)] = 0.0  # deterministic verdicts
    max_tokens: Annotated[int, Field(ge=1)] = 256  # room for the rationale and the verdict line
    parser: str = "preferred_line"  # a name in judges/parsers.py
    cache_path: str = ""  # SQLite file; empty: ~/.cache/harness/judgments.sqlite
    price_input: float = -1.0  # USD per million input tokens; -1: from the known-price table
    price_output: float = -1.0  # USD per million output tokens; -1: from the known-price table

    def __post_init__(self):
        if self.parser not in PARSERS:
            raise ValueError(f"unknown parser {self.parser!r} (parsers: {', '.join(PARSERS)})")
        import openai  # noqa: F401  (imported once here, not inside the first judging call's clock)

    @property
    def chunk_size(self) -> int:
        return 2 * self.concurrency  # both orders: about four requests per slot, so the limit stays busy

    def describe_config(self) -> dict:
        return {"judge": "openai", "model": self.model, "base_url": self.base_url or "https://api.openai.com/v1",
                "temperature": self.temperature, "max_tokens": self.max_tokens, "parser": self.parser}  # fmt: skip

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        self.stats = {"requests": 0, "cache_hits": 0, "unparseable_answers": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
        cache = VerdictCache(self.cache_path or cache_dir() / "judgments.sqlite")
        try:
            verdicts = asyncio.run(self._judge_all(comparisons, cache))
        finally:
            cache.close()
        known = PRICES.get(self.model, (0.0, 0.0))
        price_in = self.price_input if self.price_input >= 0 else known[0]
        price_out = self.price_output if self.price_output >= 0 else known[1]
        self.stats["cost_usd"] = round((self.stats["prompt_tokens"] * price_in + self.stats["completion_tokens"] * price_out) / 1e6, 6)
        return verdicts

    async def _judge_all(self, comparisons, cache: VerdictCache) -> list[Verdict]:
        from openai import APIError, AsyncOpenAI

        config = self.describe_config()
        parse = PARSERS[self.parser]
        limit = asyncio.Semaphore(self.concurrency)
        client = AsyncOpenAI(api_key=api_key(self.api_key_env, self.base_url or None), base_url=self.base_url or None,
                             max_retries=self.max_retries, timeout=self.timeout)  # fmt: skip

        async def one(c: Comparison) -> Verdict:
            prompt = render_prompt(c)
            key = verdict_key(config, prompt_template(c.family), prompt)
            hit = cache.get(key)
            if hit is not None:
                self.stats["cache_hits"] += 1
                return Verdict(hit[0], hit[1], cached=True)
            error = ""
            for _ in range(1 + self.parse_retries):
                async with limit:
                    self.stats["requests"] += 1
                    try:
                        # The raw response skips building pydantic models we would only read two fields of.
                        response = await client.chat.completions.with_raw_response.create(
                            model=self.model, messages=[{"role": "user", "content": prompt}],
                            temperature=self.temperature, max_tokens=self.max_tokens,
                        )  # fmt: skip
                        body = json.loads(response.text)
                    except APIError as exc:  # the client's own retries are spent
                        self.stats["failed"] += 1
                        return Verdict(None, error=f"request failed after {self.max_retries} retries: {type(exc).__name__}: {str(exc)[:200]}")
                usage = body.get("usage") or {}
                prompt_tokens = usage.get("prompt_tokens") or 0
                completion_tokens = usage.get("completion_tokens") or 0
                self.stats["prompt_tokens"] += prompt_tokens
                self.stats["completion_tokens"] += completion_tokens
                raw = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
                parsed = parse(raw)
                if parsed is not None:
                    cache.put(key, parsed[0], parsed[1], raw, prompt_tokens, completion_tokens)
                    return Verdict(parsed[0], parsed[1])
                self.stats["unparseable_answers"] += 1
                error = f"no verdict in the answer: {raw[:120]!r}"
            self.stats["failed"] += 1
            return Verdict(None, error=error)

        async with client:
            return list(await asyncio.gather(*(one(c) for c in comparisons)))
