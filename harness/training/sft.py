"""Supervised fine-tuning as one more objective of the shared trainer: cross-entropy on completions."""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import CHOSEN, LogProbs, Method


@dataclass
class SFT(Method):
    """Token-averaged negative log-likelihood of the reference completion (prompt tokens masked)."""

    needs = (CHOSEN,)  # the reference is fed as the "chosen" side
    uses_reference = False
    registered_name = "sft"

    def loss(self, policy: LogProbs, reference: LogProbs | None):
        nll = -policy.get(CHOSEN, average=True)  # [B]
        return nll, {"nll": nll.detach()}


def sft_rows(examples: list[dict]) -> list[dict]:
    """SFT examples (with ``reference``) as trainer rows: the reference is the completion."""
    return [{**ex, "chosen": ex["reference"], "rejected": ex["reference"]} for ex in examples]
