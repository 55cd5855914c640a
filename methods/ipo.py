"""IPO: Identity Preference Optimization (Azar et al., 2023, Eq. 17); the paper's Appendix D form:

    L = (h(y_w) - h(y_l) - 1 / (2 beta))^2

By default h sums the log-ratio over the completion's tokens. TRL's "ipo" loss divides it by the
completion's tokens, a normalisation the IPO paper does not write (TRL's comment says its authors
confirmed it): that is ``average_log_prob=true`` here, which tests/test_trl_parity.py trains
against TRL's DPOTrainer step for step.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import Positive
from harness.method import CHOSEN, REJECTED, LogProbs, Method, register


@register("ipo")
@dataclass
class IPO(Method):
    """Identity Preference Optimization: squared loss pulling the log-ratio margin to 1/(2 beta)."""

    beta: Positive = 0.01  # Sec. 6 (TL;DR): 0.01; Appendix D (UltraFeedback): 1.0
    average_log_prob: bool = False  # per-token average log-likelihood (Appendix D) instead of the sum

    needs = (CHOSEN, REJECTED)

    def loss(self, policy: LogProbs, reference: LogProbs | None):
        margin = self.ratio(policy, reference, CHOSEN) - self.ratio(policy, reference, REJECTED)  # [B]
        losses = (margin - 1.0 / (2.0 * self.beta)) ** 2
        return losses, {"margin": margin.detach(), "accuracy": (margin > 0).float()}
