"""Scoring speed: the headline interval (the score interval, and interval="bca": 10,000 resamples of
1,024 verdicts, against scipy's bootstrap), and every table of a 5-method x 6-revision run.

    python benchmarks/scoring.py
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from scipy import stats

from harness.scoring import BootstrapConfig, bca_interval, score_interval
from harness.stages.score import score_verdicts


def best_of(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    config = BootstrapConfig(resamples=10_000)
    verdicts = rng.choice([0.0, 0.5, 1.0], size=1024, p=[0.35, 0.1, 0.55])  # an API judge, both orders: three values
    proxy = rng.random(1024)  # a local proxy judge's probabilities: every value distinct
    rows = [
        ("score interval, 1,024 verdicts (0, 1/2, 1)", best_of(lambda: score_interval(verdicts, config))),
        ("BCa, 10,000 resamples of 1,024 verdicts (0, 1/2, 1)", best_of(lambda: bca_interval(verdicts, config))),
        ("BCa, 10,000 resamples of 1,024 distinct verdicts", best_of(lambda: bca_interval(proxy, config), 3)),
        ("scipy.stats.bootstrap BCa, same 1,024 verdicts", best_of(lambda: stats.bootstrap((verdicts,), np.mean, n_resamples=10_000, method="BCa", random_state=0), 3)),
    ]
    frame = pd.DataFrame([
        {"example_id": str(i), "position": i, "method": m, "opponent": "reference", "revision": r, "preference": float(rng.choice([0, 0.5, 1])),
         "length": float(rng.integers(10, 40)), "opponent_length": float(rng.integers(10, 40))}
        for m in ("srpo", "dpo", "ipo", "simpo", "rpo") for r in range(6) for i in range(1024)
    ])  # fmt: skip
    rows.append(("every table of 5 methods x 6 revisions x 1,024 examples", best_of(lambda: score_verdicts(frame, config), 1)))
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1000:9.3f} ms")


if __name__ == "__main__":
    main()
