"""A tabular policy for synthetic tasks, trained with the very method losses that train LMs.

pi(y) is a softmax over per-arm logits; the improvement policy pi(y'|y) a softmax over a K x K
table whose row y is the in-context arm. References are uniform (Sec. 5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from harness.method import CHOSEN, REJECTED, LogProbs, Method, parse_key


class TabularPolicy(nn.Module):
    def __init__(self, n_arms: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_arms))  # [K], pi(y) = softmax: starts uniform = pi_ref
        self.revision_logits = nn.Parameter(torch.zeros(n_arms, n_arms))  # [K, K], row y: pi(. | y)

    def log_probs(self, winners: torch.Tensor, losers: torch.Tensor, keys: tuple[str, ...]) -> LogProbs:
        arms = {CHOSEN: winners, REJECTED: losers}  # each [B]
        base = torch.log_softmax(self.logits, dim=-1)  # [K]
        revised = torch.log_softmax(self.revision_logits, dim=-1)  # [K, K]
        sums = {}
        for key in keys:
            completion, in_context = parse_key(key)
            if in_context is None:
                sums[key] = base[arms[completion]]
            else:
                sums[key] = revised[arms[in_context], arms[completion]]
        counts = {key: torch.ones_like(winners, dtype=torch.float32) for key in keys}
        return LogProbs(sums, counts)

    def probabilities(self) -> np.ndarray:
        return torch.softmax(self.logits.detach(), -1).numpy()

    def revision_probabilities(self) -> np.ndarray:
        return torch.softmax(self.revision_logits.detach(), -1).numpy()


def uniform_reference(n_arms: int, batch: int, keys: tuple[str, ...]) -> LogProbs:
    """pi_ref(y) = pi_ref(y'|y) = 1/K for every arm (Sec. 5)."""
    value = torch.full((batch,), -math.log(n_arms))
    return LogProbs({k: value for k in keys}, {k: torch.ones(batch) for k in keys})


def train_tabular(
    method: Method, winners: np.ndarray, losers: np.ndarray, n_arms: int, steps: int, lr: float, seed: int
) -> tuple[TabularPolicy, list[float]]:
    """Full-batch Adam on the mean of the method's per-pair losses; returns the policy and loss curve.
    One torch thread: the tensors have three or nine entries, and a thread pool's hand-offs cost
    more than the arithmetic (16-90 s per policy on a busy 2-core machine, about 1 s on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_tabular(method, winners, losers, n_arms, steps, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _train_tabular(method: Method, winners, losers, n_arms: int, steps: int, lr: float, seed: int) -> tuple[TabularPolicy, list[float]]:
    torch.manual_seed(seed)
    policy = TabularPolicy(n_arms)
    w = torch.as_tensor(winners, dtype=torch.long)  # [N]
    l = torch.as_tensor(losers, dtype=torch.long)  # [N]
    reference = uniform_reference(n_arms, len(w), method.needs) if method.uses_reference else None
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    curve = []
    for _ in range(steps):
        optimizer.zero_grad()
        losses, _ = method.loss(policy.log_probs(w, l, method.needs), reference)
        loss = losses.mean()
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    return policy, curve
