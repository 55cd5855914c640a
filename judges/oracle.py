"""The oracle judge of synthetic tasks: exact expected preferences from the known matrix P."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.plugin import Plugin
from harness.registry import judges


@judges.register("oracle")
@dataclass
class OracleJudge(Plugin):
    """Exact expected preference from a synthetic task's matrix P: no sampling, no model."""

    matrix: list  # P[i][j] = p(y_i > y_j)

    def preference(self, policy_a, policy_b) -> float:
        """p(a sample of A beats a sample of B) = a^T P b, ties (same arm) counted 1/2 by P's diagonal."""
        a, b, p = np.asarray(policy_a, float), np.asarray(policy_b, float), np.asarray(self.matrix, float)
        return float(a @ p @ b)
