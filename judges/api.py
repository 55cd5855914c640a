"""What every judge behind an OpenAI-compatible API shares: the request loop, the verdict cache,
re-asking, batching and accounting. A concrete judge says how a batch of comparisons becomes one
chat request (``request``) and how an answer becomes verdicts (``parse``).

- Each comparison has a cache key: the judge's configuration (model, endpoint, sampling, parser,
  prompt text) and the comparison itself. A cached verdict is never asked for again, and identical
  comparisons in one call are asked once.
- An answer without a parseable verdict is asked again with a different request: first with a
  reminder of the answer format, then sampled (temperature 0.7, a new seed each time), because a
  server at temperature 0 repeats its answer. After ``parse_retries`` the verdict fails with the
  reason and the last answer; failures are never cached, so a rerun asks again.
- Sources are cut to ``max_source_words`` words (the judge's context; the cut is in its config).
- ``stats`` counts every HTTP request (retries included), tokens and cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from harness.config import NonNegativeInt, Positive, PositiveInt
from harness.judge import Comparison, Judge, Verdict
from harness.judges.cache import VerdictCache
from harness.models import cache_dir
from harness.openai_client import AdaptiveLimit, BaseURL, Usage, api_key, in_flight, make_client, send
from harness.truncation import SourceBudget

# USD per million tokens (input, output), for the cost line; unknown models cost what you set.
PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "gpt-4-0613": (30.0, 60.0), "gpt-4-0314": (30.0, 60.0), "gpt-4.1": (2.0, 8.0),
          "gpt-4.1-mini": (0.4, 1.6), "gpt-4-1106-preview": (10.0, 30.0), "gpt-4-turbo": (10.0, 30.0)}  # fmt: skip
SAMPLED_REASK_TEMPERATURE = 0.7


@dataclass
class APIJudge(Judge):
    """Base of the judges behind an OpenAI-compatible API (not registered itself)."""

    # How requests travel and what they cost; retries decide whether a verdict arrives, not what it says.
    not_in_verdicts: ClassVar[frozenset[str]] = frozenset(
        {"api_key_env", "concurrency", "max_retries", "timeout", "parse_retries", "cache_path", "price_input", "price_output"}
    )

    base_url: BaseURL = ""  # empty: OpenAI; else e.g. http://127.0.0.1:8080/v1 (a vLLM or llama.cpp server)
    api_key_env: str = ""  # the variable holding the key; empty: OPENAI_API_KEY for OpenAI's API and no key for any other server
    concurrency: PositiveInt | Literal["auto"] = "auto"  # requests in flight; "auto": 64 for OpenAI's API, 4 for another server; halves after a timeout
    max_retries: NonNegativeInt = 5  # retries of a request after 429, 5xx, a timeout or a dropped connection
    timeout: Positive = 60.0  # seconds per request
    parse_retries: NonNegativeInt = 2  # asks again when an answer holds no verdict: with a format reminder, then sampled
    max_source_words: NonNegativeInt = 2000  # the source is cut to this many words (the judge's context); 0: never cut
    cache_path: str = ""  # SQLite file; empty: ~/.cache/harness/judgments.sqlite
    price_input: float = -1.0  # USD per million input tokens; -1: from the known-price table
    price_output: float = -1.0  # USD per million output tokens; -1: from the known-price table

    @property
    def in_flight(self) -> int:
        return in_flight(self.concurrency, self.base_url, for_openai=64)

    def check_access(self) -> None:
        api_key(self.api_key_env, self.base_url)  # raises when the key it needs is not in the environment

    @property
    def chunk_size(self) -> int:
        return max(2 * self.in_flight, 2 * self.batch_size)

    # -- what a concrete judge says ----------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Comparisons per request."""
        return 1

    def served_model(self) -> str:
        raise NotImplementedError

    def request(self, batch: list[Comparison], reminder: bool) -> dict:
        """The chat request (messages, sampling) judging ``batch``; ``reminder``: add the answer format."""
        raise NotImplementedError

    def parse(self, body: dict, n: int) -> list[tuple[float, str]] | None:
        """p(A better) and a rationale for each of the ``n`` comparisons of a batch, or None."""
        raise NotImplementedError

    def key_config(self, family: str) -> dict:
        """What the cache key holds besides the comparison: ``describe_config`` and the prompt text
        that judges ``family``."""
        return self.describe_config()

    # -- the shared loop ---------------------------------------------------------------------------
    def _key(self, c: Comparison) -> str:
        blob = json.dumps({"config": self.key_config(c.family), "family": c.family, "comparison": [c.instruction, c.source, c.a, c.b]}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        budget = SourceBudget(self.max_source_words)
        comparisons = [replace(c, source=budget.cut(c.source)) for c in comparisons]
        keys = [self._key(c) for c in comparisons]
        cache = VerdictCache(self.cache_path or cache_dir() / "judgments.sqlite")
        self._usage, self._counts = Usage(), {"cache_hits": 0, "deduplicated": 0, "reasked": 0, "unparseable_answers": 0, "failed": 0}
        found: dict[str, Verdict] = {}
        try:
            for key in dict.fromkeys(keys):
                hit = cache.get(key)
                if hit is not None:
                    found[key] = Verdict(hit[0], hit[1], cached=True)
            todo = {k: c for k, c in zip(keys, comparisons) if k not in found}  # identical comparisons: asked once
            self._counts["cache_hits"] = sum(1 for k in keys if k in found)
            self._counts["deduplicated"] = len(keys) - self._counts["cache_hits"] - len(todo)
            found.update(asyncio.run(self._ask_all(list(todo.items()), cache)))
        finally:
            cache.close()
        self.stats = {**self._usage.as_dict(), **self._counts, "cost_usd": self._cost()}
        return [found[k] for k in keys]

    def _cost(self) -> float:
        known = PRICES.get(self.served_model(), (0.0, 0.0))
        price_in = self.price_input if self.price_input >= 0 else known[0]
        price_out = self.price_output if self.price_output >= 0 else known[1]
        return round((self._usage.prompt_tokens * price_in + self._usage.completion_tokens * price_out) / 1e6, 6)

    async def _ask_all(self, todo: list[tuple[str, Comparison]], cache: VerdictCache) -> dict[str, Verdict]:
        client = make_client(self.base_url, self.api_key_env, self.timeout)
        limit = AdaptiveLimit(self.in_flight)
        batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        async with client:
            results = await asyncio.gather(*(self._ask(client, limit, batch, cache) for batch in batches))
        return {k: v for batch in results for k, v in batch.items()}

    async def _ask(self, client, limit: AdaptiveLimit, batch: list[tuple[str, Comparison]], cache: VerdictCache) -> dict[str, Verdict]:
        # a short last batch is padded with its own last comparison: the prompt's layout wants batch_size of them
        comparisons = [c for _, c in batch] + [batch[-1][1]] * (self.batch_size - len(batch))
        last = ""
        for attempt in range(1 + self.parse_retries):
            request = self.request(comparisons, reminder=attempt >= 1)
            if attempt >= 2:  # a server at temperature 0 repeats itself: sample
                request = {**request, "temperature": SAMPLED_REASK_TEMPERATURE, "seed": attempt}
            body, error = await send(client, "chat", {"model": self.served_model(), **request}, limit, self._usage, self.max_retries,
                                     self.api_key_env, f"--judge-arg max_source_words=N, now {self.max_source_words}")  # fmt: skip
            if body is None:
                self._counts["failed"] += len(batch)
                return {k: Verdict(None, error=f"request failed: {error}") for k, _ in batch}
            parsed = self.parse(body, len(comparisons))
            if parsed is not None and len(parsed) == len(comparisons):
                raw, usage = answer_text(body), body.get("usage") or {}
                out = {}
                for (key, _), (p, rationale) in zip(batch, parsed):
                    cache.put(key, p, rationale, raw, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                    out[key] = Verdict(p, rationale)
                return out
            self._counts["unparseable_answers"] += 1
            if attempt < self.parse_retries:
                self._counts["reasked"] += 1
            last = answer_text(body)
        self._counts["failed"] += len(batch)
        how = "asked again with a reminder of the format, then sampled at temperature 0.7" if self.parse_retries else "not asked again (parse_retries=0)"
        return {k: Verdict(None, error=f"no verdict in {1 + self.parse_retries} answer(s) ({how}); the last: {last[:160]!r}") for k, _ in batch}


def answer_text(body: dict) -> str:
    return ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""


def answer_logprobs(body: dict) -> list[list[dict]]:
    """The top log-probabilities of each answer token: [token][alternative] -> {"token", "logprob"}."""
    content = (((body.get("choices") or [{}])[0].get("logprobs") or {}).get("content")) or []
    return [entry.get("top_logprobs") or [] for entry in content]
