"""SRPO: Self-Improving Robust Preference Optimization (Choi et al., 2024), Eq. 15-17.

One model plays both the generative policy pi(y|x) and the self-improvement policy pi(y'|y, x),
the latter read through the task's revision prompt. With h(y) = log pi(y|x) - log pi_ref(y|x) and
h+(y'|y) = log pi(y'|y, x) - log pi_ref(y'|y, x):

    Eq. 15  L_self  = (1/2 - beta [h+(y_w|y_l) - h+(y_l|y_l)])^2 + (1/2 - beta [h+(y_w|y_w) - h+(y_l|y_w)])^2
    Eq. 16  L_joint = (beta [h+(y_w|y_l) + h(y_w) - h+(y_l|y_w) - h(y_l)] - 1)^2
    Eq. 17  L       = (1 - alpha) L_joint + alpha L_self

Departures from the printed paper (errata, see DESIGN.md): Eq. 4 and 14 put h(y) and h(y') on the
wrong sides; we follow Eq. 16, the one consistent with the derivation in Sec. 4.2 (it raises
h(y_w)). Sec. 4.2.3 writes the alpha mix the other way round; we follow Eq. 17 and Appendix B,
where alpha = 1 means Eq. 15 alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import Fraction, Positive
from harness.method import CHOSEN, REJECTED, LogProbs, Method, register, revision

W, L = CHOSEN, REJECTED
W_GIVEN_L = revision(W, L)  # y_w revising y_l: the improvement the data shows
L_GIVEN_L = revision(L, L)  # y_l "revising" itself
W_GIVEN_W = revision(W, W)
L_GIVEN_W = revision(L, W)  # y_l revising y_w: a worsening


@register("srpo")
@dataclass
class SRPO(Method):
    """Self-Improving Robust Preference Optimization (Eq. 17): least squares on 0-revision and revision log-ratios."""

    beta: Positive = 0.01  # KL strength; Sec. 6 (TL;DR) uses 0.01, Appendix D (UltraFeedback) 1.3
    alpha: Fraction = 0.0  # weight of the self-improvement loss Eq. 15; 1 - alpha weights Eq. 16
    average_log_prob: bool = False  # per-token average log-likelihood (Appendix D) instead of the sum

    needs = (W, L, W_GIVEN_L, L_GIVEN_L, W_GIVEN_W, L_GIVEN_W)

    def loss(self, policy: LogProbs, reference: LogProbs | None):
        h = {key: self.ratio(policy, reference, key) for key in self.needs}  # each [B]
        # Eq. 15: the improvement policy should prefer y_w by exactly 1/2 over the in-context completion.
        self_improve = (0.5 - self.beta * (h[W_GIVEN_L] - h[L_GIVEN_L])) ** 2 + (
            0.5 - self.beta * (h[W_GIVEN_W] - h[L_GIVEN_W])
        ) ** 2
        # Eq. 16: joint regression of pi and the improvement policy onto the preference (1 for y_w).
        joint_margin = h[W_GIVEN_L] + h[W] - h[L_GIVEN_W] - h[L]
        joint = (self.beta * joint_margin - 1.0) ** 2
        losses = (1.0 - self.alpha) * joint + self.alpha * self_improve  # Eq. 17
        metrics = {
            "loss_joint": joint.detach(),
            "loss_self_improve": self_improve.detach(),
            "margin": (self.beta * (h[W] - h[L])).detach(),
            "accuracy": (h[W] > h[L]).float(),
            "revision_margin": (self.beta * (h[W_GIVEN_L] - h[L_GIVEN_L])).detach(),
            "revision_accuracy": (h[W_GIVEN_L] > h[L_GIVEN_L]).float(),
        }
        return losses, metrics
