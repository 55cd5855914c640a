"""Win rates with the paper's bootstrap (Sec. 6, Appendix C.3).

A preference is the judge's verdict for the candidate against its opponent, in [0, 1]: 1 a win,
0 a loss, 0.5 a tie (an order-inconsistent pair judged both ways averages to 0.5). The win rate is
their mean. The paper's uncertainty: take the first n = 1024 items, draw 20 resamples of 512 with
replacement, report the mean and std of the resampled win rates. We add a percentile confidence
interval of the same resamples at a stated level, and the generator is seeded: the same
preferences always give the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harness.config import Options


@dataclass(frozen=True)
class BootstrapConfig(Options):
    n_items: int = 1024  # score the first n items (the paper's first 1,024 test examples)
    resamples: int = 20  # bootstrap resamples (the paper's 20)
    sample_size: int = 512  # items per resample, drawn with replacement (the paper's 512); capped at n
    level: float = 0.95  # confidence level of the percentile interval
    seed: int = 0  # seeds the resampling

    def __post_init__(self):
        if self.n_items < 1 or self.resamples < 1 or self.sample_size < 1:
            raise ValueError("n_items, resamples and sample_size must be positive")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")


@dataclass(frozen=True)
class WinRate:
    win_rate: float  # mean of the bootstrap win rates (the paper's headline number)
    std: float  # std of the bootstrap win rates (the paper's shaded band)
    ci: tuple[float, float]  # percentile interval of the bootstrap win rates at ``level``
    level: float
    point: float  # plain win rate over all n items, no resampling
    n: int  # items scored
    wins: int
    ties: int
    losses: int
    resamples: int
    sample_size: int

    def as_row(self) -> dict:
        row = asdict(self)
        row["ci"] = list(self.ci)
        return row


def bootstrap_win_rate(preferences, config: BootstrapConfig = BootstrapConfig()) -> WinRate:
    prefs = np.asarray(preferences, dtype=float)[: config.n_items]  # [n]
    if prefs.size == 0:
        raise ValueError("no preferences to score")
    if np.isnan(prefs).any() or (prefs < 0).any() or (prefs > 1).any():
        raise ValueError("preferences must be numbers in [0, 1] (failed verdicts are excluded before scoring)")
    n = prefs.size
    size = min(config.sample_size, n)
    rng = np.random.default_rng(config.seed)
    idx = rng.integers(0, n, size=(config.resamples, size))  # [R, m]
    rates = prefs[idx].mean(axis=1)  # [R]
    tail = (1 - config.level) / 2 * 100
    lo, hi = np.percentile(rates, [tail, 100 - tail])
    return WinRate(
        win_rate=float(rates.mean()),
        std=float(rates.std(ddof=1)) if config.resamples > 1 else 0.0,
        ci=(float(lo), float(hi)),
        level=config.level,
        point=float(prefs.mean()),
        n=n,
        wins=int((prefs > 0.5).sum()),
        ties=int((prefs == 0.5).sum()),
        losses=int((prefs < 0.5).sum()),
        resamples=config.resamples,
        sample_size=size,
    )
