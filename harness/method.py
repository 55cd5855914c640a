"""What a preference method is: hyper-parameters, the log-probabilities it needs, and a pure loss.

A method never sees a model. The trainer (or the bandit's tabular policy) computes the
log-probabilities named in ``needs`` for a batch of preference pairs and hands them over as
``LogProbs``; the method returns per-pair losses and metrics. The same function therefore trains
a three-armed bandit and a LoRA on an 8B model.

Sequence keys. ``"chosen"`` is log pi(y_w | x) under the 0-revision prompt, ``"rejected"`` is
log pi(y_l | x). A revision key ``"chosen|rejected"`` is log pi(y_w | x, y_l): the revision prompt
with y_l as the in-context completion (the EXAMPLE SUMMARY) and y_w as the completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness import registry
from harness.plugin import Plugin

CHOSEN = "chosen"
REJECTED = "rejected"


def revision(completion: str, in_context: str) -> str:
    """Key of log pi(completion | x, in_context) under the task's revision prompt."""
    return f"{completion}|{in_context}"


def parse_key(key: str) -> tuple[str, str | None]:
    """``"chosen|rejected"`` -> ("chosen", "rejected"); ``"chosen"`` -> ("chosen", None)."""
    completion, _, in_context = key.partition("|")
    return completion, (in_context or None)


@dataclass(frozen=True)
class LogProbs:
    """Log-probabilities of a batch of B pairs, one entry per sequence key."""

    sums: dict[str, torch.Tensor]  # key -> [B], sum of log pi over the completion's tokens
    counts: dict[str, torch.Tensor]  # key -> [B], number of completion tokens (1 for a bandit arm)

    def get(self, key: str, average: bool) -> torch.Tensor:
        """Sum log-likelihood, or the per-token average when ``average`` (Appendix D's variant)."""
        if average:
            return self.sums[key] / self.counts[key].clamp(min=1)
        return self.sums[key]


@dataclass
class Method(Plugin):
    """Base of every preference method. Subclasses are dataclasses: their fields are the
    hyper-parameters, their defaults the paper's, and their docstring's first line is what
    ``harness list`` shows."""

    needs: ClassVar[tuple[str, ...]]  # the sequence keys whose log-probs loss() reads
    uses_reference: ClassVar[bool] = True  # False: no reference model is ever evaluated

    def loss(
        self, policy: LogProbs, reference: LogProbs | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-pair losses [B] and per-pair metrics (each [B]) for logging."""
        raise NotImplementedError

    def ratio(self, policy: LogProbs, reference: LogProbs | None, key: str) -> torch.Tensor:
        """h(key) = log pi - log pi_ref, both as sums or both as per-token averages."""
        average = getattr(self, "average_log_prob", False)
        logp = policy.get(key, average)
        return logp - reference.get(key, average) if reference is not None else logp


def build_method(name: str, overrides: dict | None = None) -> Method:
    """The registered method ``name`` with its defaults and ``overrides`` applied, checked."""
    from harness.config import build_dataclass

    return build_dataclass(registry.methods.get(name), overrides or {}, what=f"method {name!r}")


register = registry.methods.register
