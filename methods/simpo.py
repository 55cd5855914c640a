"""SimPO: Simple Preference Optimization (Meng et al., 2024, Eq. 6), reference-free:

    L = -log sigmoid(beta [avg log pi(y_w|x) - avg log pi(y_l|x)] - gamma)

SimPO is defined on the per-token average; ``average_log_prob=False`` gives the sum variant. TRL's
CPOTrainer with loss_type "simpo" and ``cpo_alpha=0`` computes the same: tests/test_trl_parity.py
trains both from the same LoRA start and compares every step's loss and the trained weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from harness.config import Positive
from harness.method import CHOSEN, REJECTED, LogProbs, Method, register


@register("simpo")
@dataclass
class SimPO(Method):
    """Simple Preference Optimization: reference-free, length-normalised, with a target margin gamma."""

    beta: Positive = 50.0  # Appendix D's value for SimPO
    gamma: float = 0.5  # target reward margin; the paper gives none, 0.5 is TRL's default
    average_log_prob: bool = True  # SimPO's length normalisation

    needs = (CHOSEN, REJECTED)
    uses_reference = False

    def loss(self, policy: LogProbs, reference: LogProbs | None):
        margin = policy.get(CHOSEN, self.average_log_prob) - policy.get(REJECTED, self.average_log_prob)  # [B]
        losses = -F.logsigmoid(self.beta * margin - self.gamma)
        return losses, {"margin": (self.beta * margin).detach(), "accuracy": (margin > 0).float()}
