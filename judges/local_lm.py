"""An offline judge: a local causal LM's probability of answering "A" or "B" to the judge prompt.

The judge prompt (``judges/prompts``) goes through the model's chat template (a model without
one, a base model, reads it as it is), the answer is started with "Preferred:", and p(A better)
is the model's next-token probability of A over A and B. No sampling, no parsing, nothing to
fail. With SmolLM2-135M-Instruct this runs anywhere but is a weak *proxy* for the paper's GPT-4
judge: its numbers say whether the pipeline works, not which method is better. Use the openai
judge for results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.config import NonNegativeInt
from harness.judge import Comparison, Verdict, register, render_prompt
from harness.judges.local import LocalModelJudge
from harness.models import check_kind, inference_placement, load_causal_lm, load_tokenizer, positions, resolve_model
from harness.prompting import in_chat_template
from harness.truncation import SourceBudget


@register("local-lm")
@dataclass
class LocalLMJudge(LocalModelJudge):
    """Offline proxy judge: a local LM's next-token probability of "A" vs "B", no API needed."""

    # 1: a chat template that prints today's date prints harness.prompting.CHAT_DATE; 2: a comparison
    # past the model's positions fails, where a rotary model gave a verdict on positions it never saw
    code_version: ClassVar[int] = 2
    model: str = "smollm2-135m"  # any causal LM, best an instruct model with a chat template; smollm2-135m works offline
    max_source_tokens: NonNegativeInt = 256  # the source is cut to this many tokens (the candidates never are): CPU time

    def describe_config(self) -> dict:
        return {**super().describe_config(), "prompts": "the harness's own (judges/prompts), read by next-token p(A) vs p(B)"}

    def is_proxy(self) -> bool:
        return True

    def check_access(self) -> None:
        check_kind(resolve_model(self.model), "judge 'local-lm': model", scores=False)  # a reward model is --judge reward-model's

    def _load(self):
        if self._model is None:
            path = resolve_model(self.model)
            self._tokenizer = load_tokenizer(path)
            self._tokenizer.padding_side = "left"  # the next token is read at the last position of every row
            device, dtype = inference_placement(self.device)
            self._model = load_causal_lm(path, dtype).to(device).eval()
            ids = lambda s: self._tokenizer(s, add_special_tokens=False)["input_ids"][-1]  # noqa: E731
            self._answer_ids = {"A": sorted({ids("A"), ids(" A")}), "B": sorted({ids("B"), ids(" B")})}
        return self._model

    def _prompt(self, c: Comparison) -> str:
        budget = SourceBudget(self.max_source_tokens, self._tokenizer)
        shown = Comparison(c.family, c.instruction, budget.cut(c.source), c.a, c.b)
        if not getattr(self._tokenizer, "chat_template", None):  # a base model: the prompt as it is, the answer started below it
            return f"{render_prompt(shown)}\n\nPreferred:"
        return in_chat_template(self._tokenizer, [{"role": "user", "content": render_prompt(shown)}]) + "Preferred:"

    @torch.no_grad()
    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        self._load()
        encoded = [self._tokenizer(self._prompt(c), add_special_tokens=False)["input_ids"] for c in comparisons]
        limit = positions(self._model) or float("inf")
        fits = [i for i, ids in enumerate(encoded) if len(ids) <= limit]
        p_a = dict(zip(fits, self._per_text([encoded[i] for i in fits], self._p_a)))
        return [Verdict(p_a[i], f"next-token p(A | A or B) = {p_a[i]:.3f}") if i in p_a else
                Verdict(None, error=f"the comparison is {len(ids)} tokens, past the judge model's {limit} positions: lower --judge-arg "
                                    "max_source_tokens, or judge with a model of a longer context")
                for i, ids in enumerate(encoded)]  # fmt: skip

    def _p_a(self, batch: dict) -> list[float]:
        """p(A) / (p(A) + p(B)) for each left-padded prompt of ``batch`` ([B, L])."""
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # each prompt from 0 whatever its padding, as generate() counts them
        logits = self._model(**batch, position_ids=positions, logits_to_keep=1, use_cache=False).logits[:, -1].float()  # [B, V]: the next token only
        logp = torch.log_softmax(logits, dim=-1)
        a = torch.logsumexp(logp[:, self._answer_ids["A"]], dim=-1)  # [B]
        b = torch.logsumexp(logp[:, self._answer_ids["B"]], dim=-1)
        return torch.sigmoid(a - b).tolist()
