"""A reward-model judge: a sequence-classification model scores each candidate against the
source; P(A > B) = sigmoid(r_A - r_B) (the Bradley-Terry reading of reward differences)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from harness.config import PositiveInt
from harness.judge import Comparison, Judge, Verdict, register
from harness.models import inference_placement, resolve_model


@register("reward-model")
@dataclass
class RewardModelJudge(Judge):
    """A sequence-classification reward model: P(A > B) = sigmoid(r_A - r_B)."""

    not_in_verdicts: ClassVar[frozenset[str]] = frozenset({"batch_size", "device"})  # the precision they lead to is in the key
    model: str = ""  # a reward model with one output logit, e.g. a hub id or a local folder
    batch_size: PositiveInt = 8  # texts scored per forward pass
    max_length: PositiveInt = 2048  # tokens per scored text (the head of the source is kept)
    device: Literal["auto", "cuda", "cpu"] = "auto"  # "auto": CUDA when present (bfloat16), else CPU

    def __post_init__(self):
        if not self.model:
            raise ValueError("the reward-model judge needs --judge-arg model=HUB_ID_OR_FOLDER")
        self._model = None

    def describe_config(self) -> dict:
        return {**super().describe_config(), "dtype": inference_placement(self.device)[1]}  # bfloat16 rewards on a GPU are not float32 ones

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            path = resolve_model(self.model)
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            if self._tokenizer.pad_token_id is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            device, dtype = inference_placement(self.device)
            self._model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
            self._model.config.pad_token_id = self._tokenizer.pad_token_id
        return self._model

    def _text(self, c: Comparison, candidate: str) -> str:
        request = f"{c.instruction}\n\n{c.source}" if c.family == "summary" else c.source
        if getattr(self._tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": request}, {"role": "assistant", "content": candidate}]
            return self._tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{request}\n\n{candidate}"

    @torch.no_grad()
    def rewards(self, texts: list[str]) -> list[float]:
        model = self._load()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: little padding
        out = [0.0] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self._tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=self.max_length).to(model.device)
            for i, reward in zip(idx, model(**enc).logits[:, 0].float().tolist()):  # one reward per text
                out[i] = reward
        return out

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        self._load()
        texts = sorted({self._text(c, x) for c in comparisons for x in (c.a, c.b)})
        reward = dict(zip(texts, self.rewards(texts)))  # each distinct text scored once
        self.stats = {"scored_texts": len(texts), "failed": 0}
        verdicts = []
        for c in comparisons:
            r_a, r_b = reward[self._text(c, c.a)], reward[self._text(c, c.b)]
            verdicts.append(Verdict(float(torch.sigmoid(torch.tensor(r_a - r_b))), f"r_A = {r_a:.3f}, r_B = {r_b:.3f}"))
        return verdicts
