"""Where each method should end on a synthetic bandit: its optimum under the behaviour policy mu.

Pairs (y, y') are drawn from mu x mu and the winner from P, so a pair (w, l) has probability
q(w, l) = 2 mu(w) mu(l) P(w, l) for w != l (and mu(w)^2 for w = l). A method's expected loss is
its own loss averaged with q; ``minimise_expected_loss`` finds its minimiser over tabular
policies (pi(y), and pi(y'|y) for SRPO). Where the minimiser is known in closed form:

- IPO (Azar et al., 2023; the paper's Eq. 18 with Psi = identity): pi*(y) ∝ pi_ref(y) exp(E_{y'~mu}[P(y, y')] / beta).
- SRPO for alpha in (0, 1) (Eq. 5 and 11): pi_dagger*(y'|y) ∝ pi_ref(y'|y) exp(P(y', y) / beta) with
  normaliser Z(y), and pi*(y) ∝ pi_ref(y) / Z(y): independent of mu. At the ends pi is not
  determined by the loss: with alpha = 0, Eq. 16 alone constrains only sums h(y) + h_dagger(..),
  so any pi reaches the minimum with a matching pi_dagger; with alpha = 1, Eq. 15 alone does not
  involve pi(y) at all. There the learned pi comes from the optimiser's start.
- DPO has none (P is not Bradley-Terry): its optimum is the numerical minimiser.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.method import Method
from harness.policies.tabular import TabularPolicy, uniform_reference


def pair_weights(matrix, mu) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (winner, loser) arm pair and its probability q under mu x mu and P."""
    p, mu = np.asarray(matrix, dtype=float), np.asarray(mu, dtype=float)
    k = len(mu)
    winners, losers, q = [], [], []
    for w in range(k):
        for l in range(k):
            weight = mu[w] ** 2 if w == l else 2 * mu[w] * mu[l] * p[w, l]
            if weight > 0:
                winners.append(w), losers.append(l), q.append(weight)
    return np.array(winners), np.array(losers), np.array(q) / np.sum(q)


def minimise_expected_loss(method: Method, matrix, mu, steps: int = 500) -> np.ndarray:
    """pi(y) minimising ``method``'s expected loss under ``mu`` (L-BFGS from the uniform policy)."""
    winners, losers, q = pair_weights(matrix, mu)
    w, l, weight = torch.as_tensor(winners), torch.as_tensor(losers), torch.as_tensor(q, dtype=torch.float64)
    policy = TabularPolicy(len(mu)).double()
    reference = uniform_reference(len(mu), len(w), method.needs) if method.uses_reference else None
    if reference is not None:
        reference = type(reference)({k: v.double() for k, v in reference.sums.items()}, {k: v.double() for k, v in reference.counts.items()})
    optimizer = torch.optim.LBFGS(policy.parameters(), lr=1, max_iter=steps, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        losses, _ = method.loss(policy.log_probs(w, l, method.needs), reference)
        loss = (losses * weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.softmax(policy.logits.detach(), -1).numpy()


def closed_form(method: Method, matrix, mu) -> np.ndarray | None:
    """The analytic optimum pi*(y) with uniform references, where one exists (see above)."""
    p, mu = np.asarray(matrix, dtype=float), np.asarray(mu, dtype=float)
    name = method.registered_name
    if name == "ipo" and not method.average_log_prob:
        logits = p @ mu / method.beta
    elif name == "srpo" and 0 < method.alpha < 1 and not method.average_log_prob:
        k = len(mu)
        z = (np.exp(p.T / method.beta) / k).sum(axis=1)  # Z(y) = sum_y' pi_ref(y'|y) exp(P(y', y) / beta)
        logits = -np.log(z)
    else:
        return None
    e = np.exp(logits - logits.max())
    return e / e.sum()


def optimum(method: Method, matrix, mu) -> tuple[np.ndarray | None, str]:
    """(pi*, how it was found) for the bandit page; None where the loss does not determine pi."""
    name = method.registered_name
    if name == "srpo" and method.alpha == 0:
        return None, "none: with alpha = 0, Eq. 16 leaves pi(y) free (any pi reaches the minimum with a matching improvement policy)"
    if name == "srpo" and method.alpha == 1:
        return None, "none: with alpha = 1, Eq. 15 alone does not involve pi(y)"
    exact = closed_form(method, matrix, mu)
    if exact is not None:
        return exact, "closed form"
    return minimise_expected_loss(method, matrix, mu), "numerical minimiser of its expected loss under mu"
