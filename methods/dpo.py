"""DPO: Direct Preference Optimization (Rafailov et al., 2023, Eq. 7); the paper's Appendix D form:

    L = -log sigmoid(beta [h(y_w) - h(y_l)]),   h(y) = log pi(y|x) - log pi_ref(y|x)

TRL's DPOTrainer (loss_type "sigmoid") computes the same: tests/test_trl_parity.py trains both on
the same pairs and LoRA start and compares every step's loss and the final weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from harness.config import Positive
from harness.method import CHOSEN, REJECTED, LogProbs, Method, register


@register("dpo")
@dataclass
class DPO(Method):
    """Direct Preference Optimization: logistic loss on the chosen-minus-rejected log-ratio."""

    beta: Positive = 0.1  # Sec. 6 follows Rafailov et al.: 0.1 (Appendix D: 10 with average log-likelihood)
    average_log_prob: bool = False  # per-token average log-likelihood (Appendix D) instead of the sum

    needs = (CHOSEN, REJECTED)

    def loss(self, policy: LogProbs, reference: LogProbs | None):
        margin = self.ratio(policy, reference, CHOSEN) - self.ratio(policy, reference, REJECTED)  # [B]
        losses = -F.logsigmoid(self.beta * margin)
        return losses, {"margin": (self.beta * margin).detach(), "accuracy": (margin > 0).float()}
