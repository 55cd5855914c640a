"""An offline judge: a local causal LM's probability of answering "A" or "B" to the judge prompt.

The judge prompt (``judges/prompts``) goes through the model's chat template, the answer is
started with "Preferred:", and p(A better) is the model's next-token probability of A over A and B.
No sampling, no parsing, nothing to fail. With SmolLM2-135M-Instruct this runs anywhere but is a
weak *proxy* for the paper's GPT-4 judge: its numbers say whether the pipeline works, not which
method is better. Use the openai judge for results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from harness.config import NonNegativeInt, PositiveInt
from harness.judge import Comparison, Judge, Verdict, register, render_prompt
from harness.models import inference_placement, load_causal_lm, load_tokenizer, resolve_model
from harness.truncation import SourceBudget


@register("local-lm")
@dataclass
class LocalLMJudge(Judge):
    """Offline proxy judge: a local LM's next-token probability of "A" vs "B", no API needed."""

    not_in_verdicts: ClassVar[frozenset[str]] = frozenset({"batch_size", "device"})  # the precision they lead to is in the key
    model: str = "smollm2-135m"  # any causal LM with a chat template; smollm2-135m works offline
    batch_size: PositiveInt = 8  # prompts per forward pass
    device: Literal["auto", "cuda", "cpu"] = "auto"  # "auto": CUDA when present (bfloat16), else CPU
    max_source_tokens: NonNegativeInt = 256  # the source is cut to this many tokens (the candidates never are): CPU time

    def __post_init__(self):
        self._model = None

    def describe_config(self) -> dict:
        return {**super().describe_config(), "dtype": inference_placement(self.device)[1],  # bfloat16 verdicts on a GPU are not float32 ones
                "prompts": "the harness's own (judges/prompts), read by next-token p(A) vs p(B)"}  # fmt: skip

    @property
    def chunk_size(self) -> int:
        return 4 * self.batch_size

    def is_proxy(self) -> bool:
        return True

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
        messages = [{"role": "user", "content": render_prompt(shown)}]
        return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "Preferred:"

    @torch.no_grad()
    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        model = self._load()
        self.stats = {"forward_passes": 0, "failed": 0}
        verdicts = []
        for start in range(0, len(comparisons), self.batch_size):
            batch = [self._prompt(c) for c in comparisons[start : start + self.batch_size]]
            enc = self._tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            logits = model(**enc, logits_to_keep=1).logits[:, -1].float()  # [B, V]: the next token only
            logp = torch.log_softmax(logits, dim=-1)
            a = torch.logsumexp(logp[:, self._answer_ids["A"]], dim=-1)  # [B]
            b = torch.logsumexp(logp[:, self._answer_ids["B"]], dim=-1)
            p_a = torch.sigmoid(a - b)  # p(A) / (p(A) + p(B))
            self.stats["forward_passes"] += 1
            for p in p_a.tolist():
                verdicts.append(Verdict(p, f"next-token p(A | A or B) = {p:.3f}"))
        return verdicts
