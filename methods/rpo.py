"""RPO: DPO plus a negative log-likelihood term on the chosen completion (Pang et al., 2024;
the paper's Appendix D cites it as Chen et al., 2024):

    L = -log sigmoid(beta [h(y_w) - h(y_l)]) + nll_weight * beta * NLL(y_w)

NLL(y_w) is the per-token negative log-likelihood -log pi(y_w|x) / |y_w|, whatever
``average_log_prob`` says (it only changes h). Appendix D's weight 1e-5 "is then scaled by beta":
that is the ``* beta`` above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from harness.config import NonNegative, Positive
from harness.method import CHOSEN, REJECTED, LogProbs, Method, register


@register("rpo")
@dataclass
class RPO(Method):
    """Regularized Preference Optimization: DPO plus a beta-scaled NLL on the chosen completion."""

    beta: Positive = 0.1  # DPO's strength (Sec. 6's DPO value; Appendix D: 10 with average log-likelihood)
    nll_weight: NonNegative = 1e-5  # Appendix D: weight of the NLL, scaled by beta
    average_log_prob: bool = False  # per-token average log-likelihood (Appendix D) instead of the sum

    needs = (CHOSEN, REJECTED)

    def loss(self, policy: LogProbs, reference: LogProbs | None):
        margin = self.ratio(policy, reference, CHOSEN) - self.ratio(policy, reference, REJECTED)  # [B]
        nll = -policy.get(CHOSEN, average=True)  # [B], per-token NLL of y_w
        losses = -F.logsigmoid(self.beta * margin) + self.nll_weight * self.beta * nll
        return losses, {
            "margin": (self.beta * margin).detach(),
            "accuracy": (margin > 0).float(),
            "nll": nll.detach(),
        }
