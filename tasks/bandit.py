"""The paper's synthetic three-armed bandit (Sec. 5, Fig. 2).

No context; arms y0, y1, y2; P[i][j] = p(y_i > y_j). Pairs (y, y') are drawn independently from a
behaviour policy mu and labelled by sampling from P. Each method trains a tabular policy pi(y)
(and, for SRPO, the improvement policy pi(y'|y)) with Adam against uniform references, beta = 1,
alpha = 0. The paper's finding: SRPO's best arm is y2 whatever mu; DPO and IPO move to y0 when mu
is skewed towards y1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from harness.task import Task, register

PAPER_MATRIX = [[0.5, 0.99, 0.3], [0.01, 0.5, 0.25], [0.7, 0.75, 0.5]]
PAPER_BEHAVIORS = {"uniform": [1 / 3, 1 / 3, 1 / 3], "skewed": [0.15, 0.7, 0.15]}  # mu0, mu1


@register("bandit")
@dataclass
class Bandit(Task):
    """Sec. 5's 3-armed bandit: preference matrix P, behaviour policies mu, exact oracle win rates."""

    matrix: list = field(default_factory=lambda: [row[:] for row in PAPER_MATRIX])  # P[i][j] = p(y_i > y_j)
    behaviors: dict = field(default_factory=lambda: {k: v[:] for k, v in PAPER_BEHAVIORS.items()})  # name -> mu
    pairs: int = 10_000  # preference pairs sampled per behaviour policy
    steps: int = 2_000  # full-batch Adam steps
    lr: float = 0.05  # Adam learning rate

    kind = "synthetic"
    method_defaults = {"beta": 1.0, "alpha": 0.0}  # Sec. 5

    def __post_init__(self):
        p = np.asarray(self.matrix, dtype=float) if _is_numeric_table(self.matrix) else None
        if p is None or p.shape != (3, 3):
            raise ValueError(f"matrix must be 3x3 numbers, got {self.matrix!r}")
        if not ((p >= 0) & (p <= 1)).all():
            raise ValueError(f"matrix entries are probabilities and must lie in [0, 1], got {self.matrix!r}")
        if not np.allclose(p + p.T, 1.0, atol=1e-9):
            bad = [(i, j) for i in range(3) for j in range(3) if abs(p[i, j] + p[j, i] - 1) > 1e-9]
            raise ValueError(f"matrix must satisfy P + P^T = 1 (p(a>b) + p(b>a) = 1); it does not at {bad}")
        if not isinstance(self.behaviors, dict) or not self.behaviors:
            raise ValueError("behaviors must map names to probability vectors over the 3 arms")
        for name, mu in self.behaviors.items():
            if not _is_numeric_table([mu]) or len(mu) != 3:
                raise ValueError(f"behaviour {name!r} must be 3 probabilities, got {mu!r}")
            if min(mu) < 0 or abs(sum(mu) - 1.0) > 1e-6:
                raise ValueError(f"behaviour {name!r} probabilities must be non-negative and sum to 1, got {mu!r} (sum {sum(mu):.6g})")
        if self.pairs < 1 or self.steps < 1 or self.lr <= 0:
            raise ValueError("pairs and steps must be positive integers and lr a positive number")

    @property
    def n_arms(self) -> int:
        return 3

    def sample_pairs(self, behavior: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(winners, losers), each [pairs] arm indices, for behaviour ``behavior``, seeded by the run."""
        mu = np.asarray(self.behaviors[behavior], dtype=float)
        p = np.asarray(self.matrix, dtype=float)
        # One stream per behaviour, so adding a behaviour never changes another's data.
        rng = np.random.default_rng([seed, _stable_int(behavior)])
        y = rng.choice(3, size=self.pairs, p=mu / mu.sum())
        y_prime = rng.choice(3, size=self.pairs, p=mu / mu.sum())
        y_wins = rng.random(self.pairs) < p[y, y_prime]  # y beats y' with probability P[y, y']
        winners = np.where(y_wins, y, y_prime)
        losers = np.where(y_wins, y_prime, y)
        return winners, losers


def _is_numeric_table(rows) -> bool:
    return isinstance(rows, (list, tuple)) and all(
        isinstance(r, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
        for r in rows
    )


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)
