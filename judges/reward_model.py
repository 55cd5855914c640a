"""A reward-model judge: a sequence-classification model scores each candidate against the
source; P(A > B) = sigmoid(r_A - r_B) (the Bradley-Terry reading of reward differences)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.config import PositiveInt
from harness.errors import HarnessError
from harness.judge import Comparison, Verdict, register
from harness.judges.local import LocalModelJudge
from harness.models import check_kind, inference_placement, positions, resolve_model
from harness.prompting import in_chat_template
from harness.truncation import CUT_MARK, SourceBudget


@register("reward-model")
@dataclass
class RewardModelJudge(LocalModelJudge):
    """A sequence-classification reward model: P(A > B) = sigmoid(r_A - r_B)."""

    # 1: a chat template that prints today's date prints harness.prompting.CHAT_DATE; 2: a text too
    # long for max_length loses the end of its source, not the end of its candidate
    code_version: ClassVar[int] = 2
    model: str = ""  # a reward model with one output logit, e.g. a hub id or a local folder
    max_length: PositiveInt = 2048  # tokens per scored text, at most the model's positions: a longer one loses the end of its source (" [...]"), both candidates the same

    def __post_init__(self):
        if not self.model:
            raise ValueError("the reward-model judge needs --judge-arg model=HUB_ID_OR_FOLDER")
        super().__post_init__()

    def check_access(self) -> None:
        check_kind(resolve_model(self.model), "judge 'reward-model': model", scores=True)  # before the run trains anything

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            path = resolve_model(self.model)
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            if self._tokenizer.pad_token_id is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            device, dtype = inference_placement(self.device)
            model, loading = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype), output_loading_info=True)
            if loading["missing_keys"]:  # weights the checkpoint lacks were drawn at random: the head, at least
                raise HarnessError(f"judge 'reward-model': model {self.model!r} lacks weights a sequence classifier needs "
                                   f"({', '.join(sorted(loading['missing_keys'])[:3])}): pass a reward model")  # fmt: skip
            self._model = model.to(device).eval()
            self._model.config.pad_token_id = self._tokenizer.pad_token_id
        return self._model

    def _text(self, c: Comparison, candidate: str) -> str:
        request = f"{c.instruction}\n\n{c.source}" if c.family == "summary" else c.source
        if getattr(self._tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": request}, {"role": "assistant", "content": candidate}]
            return in_chat_template(self._tokenizer, messages, add_generation_prompt=False)
        return f"{request}\n\n{candidate}"

    def _limit(self) -> int:
        return min(self.max_length, positions(self._model) or self.max_length)

    def _fitted(self, c: Comparison) -> Comparison:
        """``c`` with its source cut from the end, as ``SourceBudget`` cuts, until both candidates'
        texts fit the limit whole: cut by the tokenizer, the end of a text would go, which is the
        candidate, and two candidates cut away entirely tie. The same source for both."""
        fitted, source = c, None
        for _ in range(4):  # a cut re-tokenizes its edge: a token or two more, now and then
            texts = self._tokenizer([self._text(fitted, c.a), self._text(fitted, c.b)])["input_ids"]
            over = max(map(len, texts)) - self._limit()
            if over <= 0:
                break
            if source is None:  # tokens of the whole source, counted only for a comparison too long
                source = len(self._tokenizer(c.source, add_special_tokens=False)["input_ids"])
            source = max(1, source - over - len(CUT_MARK))  # and room for the mark
            fitted = dataclasses.replace(c, source=SourceBudget(source, self._tokenizer).cut(c.source))
        return fitted

    @torch.no_grad()
    def rewards(self, texts: list[str]) -> list[float]:
        self._load()
        encoded = self._tokenizer(texts, truncation=True, max_length=self._limit())["input_ids"]  # texts fitted already: a guard
        return self._per_text(encoded, lambda batch: self._model(**batch).logits[:, 0].float().tolist())  # one reward per text

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        self._load()
        comparisons = [self._fitted(c) for c in comparisons]
        texts = sorted({self._text(c, x) for c in comparisons for x in (c.a, c.b)})
        reward = dict(zip(texts, self.rewards(texts)))  # each distinct text scored once
        verdicts = []
        for c in comparisons:
            r_a, r_b = reward[self._text(c, c.a)], reward[self._text(c, c.b)]
            verdicts.append(Verdict(float(torch.sigmoid(torch.tensor(r_a - r_b))), f"r_A = {r_a:.3f}, r_B = {r_b:.3f}"))
        return verdicts
