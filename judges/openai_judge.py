"""The harness's own pairwise judge behind any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp).

Its prompts are this project's (``judges/prompts/summary.txt`` and ``chat.txt``), one comparison
per request, answered with a rationale and a "Preferred: A|B" line. They are *not* the paper's
judge: the paper used AlpacaFarm's annotator with gpt-4-0613, which the ``alpaca-eval`` judge runs
from AlpacaEval's own config files (``--judge alpaca-eval``; the ``paper`` preset does).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import NonNegative, PositiveInt
from harness.judge import Comparison, prompt_template, register, render_prompt
from harness.judges.api import APIJudge, answer_text
from harness.judges.parsers import PARSERS
from harness.openai_client import OPENAI_URL

REMINDER = 'End your answer with one line that says exactly "Preferred: A" or "Preferred: B".'


@register("openai")
@dataclass
class OpenAIJudge(APIJudge):
    """The harness's own pairwise LLM judge over an OpenAI-compatible API (not the paper's annotator: see alpaca-eval)."""

    model: str = "gpt-4o"  # the served model; the paper: gpt-4-0613 (TL;DR, XSum) and gpt-4o (Arena-Hard)
    temperature: NonNegative = 0.0  # deterministic verdicts
    max_tokens: PositiveInt = 256  # room for the rationale and the verdict line
    parser: str = "preferred_line"  # a name in judges/parsers.py

    def __post_init__(self):
        if not self.model:
            raise ValueError("needs the served model's name: --judge-arg model=NAME (as the server's /v1/models lists it)")
        if self.parser not in PARSERS:
            raise ValueError(f"unknown parser {self.parser!r} (parsers: {', '.join(PARSERS)})")

    def describe_config(self) -> dict:
        return {**super().describe_config(), "base_url": self.base_url or OPENAI_URL,
                "prompts": "the harness's own (judges/prompts), not the paper's AlpacaFarm annotator"}  # fmt: skip

    def key_config(self, family: str) -> dict:
        return {**self.describe_config(), "template": prompt_template(family)}

    def served_model(self) -> str:
        return self.model

    def request(self, batch: list[Comparison], reminder: bool) -> dict:
        messages = [{"role": "user", "content": render_prompt(batch[0])}]
        if reminder:
            messages.append({"role": "user", "content": REMINDER})
        return {"messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def parse(self, body: dict, n: int) -> list[tuple[float, str]] | None:
        parsed = PARSERS[self.parser](answer_text(body))
        return None if parsed is None else [parsed]
