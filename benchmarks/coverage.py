"""Simulated coverage of every interval the harness prints: how often it holds the true rate.

    python benchmarks/coverage.py [--intervals score,length,paired] [--draws 1000] [--level 0.95] [--seed 0]

Verdicts of four kinds, at a known rate r: wins and losses (Bernoulli(r)); wins, ties and
losses (ties a share 0.8 (1 - r), losses 0.6 (1 - r)); mostly ties (90%, the rest wins and
losses: two methods that write the same text on most examples, judged head to head, for r from
0.45 to 0.55); and a proxy judge's probabilities, Beta(c r, c (1 - r)) of concentration c (1:
piled at 0 and 1; 40: all near r). For each case it prints the share of ``--draws`` simulated
runs whose interval holds the truth, and the mean width:

- score: the win rate's interval, truth r, at 16 and 64 verdicts (mostly ties: 16, 64 and 256);
- length: the length-controlled interval, verdicts at rate sigmoid(logit r + tanh(d / 10)) for a
  length difference d ~ N(5, 10), truth r (the rate at d = 0), at 16, 64 and 256 verdicts;
- paired: the paired difference of two methods judged on the same examples, B a copy of A on a
  share of them (as revisions of one method agree), truth r_A - r_B.

A coverage more than 2 standard errors (about 1.4 points at 1,000 draws) under the level is short.
Run on any machine; the three take about 45 s on 2 CPU cores, most of it in the length fits.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from scipy.special import expit, logit

from harness.scoring import BootstrapConfig, length_controlled, paired_interval, score_interval

KINDS = ("wins", "ties", "proxy c=1", "proxy c=4", "proxy c=10", "proxy c=40")
MOSTLY_TIES = "mostly ties"
RATES = {"ties": (2 / 7, 1), MOSTLY_TIES: (0.45, 0.55)}  # the rates a kind reaches (others: 0 to 1)


def verdicts(kind: str, rate, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` verdicts of ``kind`` whose mean is ``rate`` (a number, or one per verdict)."""
    rate = np.broadcast_to(np.asarray(rate, dtype=float), (size,))
    if kind == "wins":
        return (rng.random(size) < rate).astype(float)
    if kind == "ties":  # needs rate >= 2/7, where the share of wins, r - 0.4 (1 - r), reaches 0
        u = rng.random(size)
        return np.where(u < 0.6 * (1 - rate), 0.0, np.where(u < 1.4 * (1 - rate), 0.5, 1.0))
    if kind == MOSTLY_TIES:  # wins a share r - 0.45, losses 0.55 - r
        u = rng.random(size)
        return np.where(u < 0.9, 0.5, np.where(u < 0.45 + rate, 1.0, 0.0))
    concentration = float(kind.split("=")[1])
    return rng.beta(concentration * rate, concentration * (1 - rate))


def score_cases(config: BootstrapConfig):
    cases = [*itertools.product(KINDS, (16, 64), (0.5, 0.7, 0.9, 0.95)), *itertools.product([MOSTLY_TIES], (16, 64, 256), (0.5, 0.525, 0.55))]
    for kind, n, rate in cases:
        yield f"{kind}, n={n}, r={rate}", rate, lambda rng, kind=kind, n=n, rate=rate: score_interval(verdicts(kind, rate, n, rng), config)


def length_cases(config: BootstrapConfig):
    def run(rng, kind, n, rate):
        difference = rng.normal(5, 10, n)
        return length_controlled(verdicts(kind, expit(logit(rate) + np.tanh(difference / 10)), n, rng), difference, config)

    for kind, n, rate in itertools.product([k for k in KINDS if k != "ties"], (16, 64, 256), (0.5, 0.7, 0.9, 0.95)):
        yield f"{kind}, n={n}, r={rate}", rate, lambda rng, kind=kind, n=n, rate=rate: run(rng, kind, n, rate)


def paired_cases(config: BootstrapConfig):
    def run(rng, kind, n, rate_a, other, agree):
        a = verdicts(kind, rate_a, n, rng)
        return paired_interval(a, np.where(rng.random(n) < agree, a, verdicts(kind, other, n, rng)), config)

    rates = {MOSTLY_TIES: ((0.5, 0.52), (0.52, 0.5))}  # what mostly ties reach
    for kind in ("wins", "ties", MOSTLY_TIES, "proxy c=4"):
        for n, (rate_a, rate_b), agree in itertools.product((16, 32), rates.get(kind, ((0.5, 0.6), (0.7, 0.6), (0.9, 0.8), (0.95, 0.9))), (0.5, 0.8, 0.9)):
            other = (rate_b - agree * rate_a) / (1 - agree)  # B's rate where it does not copy A
            low, high = RATES.get(kind, (0, 1))
            if not low < other < high:
                continue  # B's other verdicts cannot reach its rate
            yield (f"{kind}, n={n}, {rate_a} vs {rate_b}, agree {agree}", rate_a - rate_b,
                   lambda rng, kind=kind, n=n, a=rate_a, other=other, agree=agree: run(rng, kind, n, a, other, agree))  # fmt: skip


CASES = {"score": score_cases, "length": length_cases, "paired": paired_cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intervals", default="score,length,paired", help="which intervals, comma-separated: " + ", ".join(CASES))
    parser.add_argument("--draws", type=int, default=1000, help="simulated runs per case")
    parser.add_argument("--level", type=float, default=0.95, help="the intervals' confidence level")
    parser.add_argument("--seed", type=int, default=0, help="seeds the simulation: the same arguments print the same numbers")
    args = parser.parse_args()
    config = BootstrapConfig(level=args.level)
    for name in args.intervals.split(","):
        print(f"\n{name} interval, {args.level:.0%} level, {args.draws} draws a case")
        print(f"{'case':<44} {'coverage':>8} {'width':>7}")
        worst = (1.0, "")
        for number, (label, truth, draw) in enumerate(CASES[name](config)):
            rng = np.random.default_rng([args.seed, number])
            intervals = [draw(rng) for _ in range(args.draws)]
            coverage = np.mean([i.low <= truth <= i.high for i in intervals])
            print(f"{label:<44} {coverage:8.3f} {np.mean([i.high - i.low for i in intervals]):7.3f}", flush=True)
            worst = min(worst, (coverage, label))
        print(f"lowest: {worst[0]:.3f} ({worst[1]})")


if __name__ == "__main__":
    main()
