"""benchmarks/coverage.py: its simulated verdicts have the rate the coverage is checked against, and a
short run prints every case."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("kind", ["wins", "ties", "proxy c=1", "proxy c=40"])
def test_every_kind_of_verdict_has_the_rate_it_is_drawn_at(monkeypatch, kind):
    """The truth each interval is held against is the verdicts' mean: a generator off by a few
    points would make every coverage it prints wrong."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from coverage import verdicts

    rng = np.random.default_rng(0)
    x = verdicts(kind, 0.7, 200_000, rng)
    assert x.min() >= 0 and x.max() <= 1
    assert x.mean() == pytest.approx(0.7, abs=0.004)
    rates = np.where(np.arange(200_000) % 2 == 0, 0.4, 0.9)  # one rate per verdict, as the length cases draw them
    y = verdicts(kind, rates, 200_000, rng)
    assert (y[0::2].mean(), y[1::2].mean()) == pytest.approx((0.4, 0.9), abs=0.005)
    if kind == "ties":
        assert set(np.unique(x)) == {0.0, 0.5, 1.0}


def test_mostly_ties_are_90_percent_ties_at_the_rate_they_are_drawn_at(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from coverage import verdicts

    for rate in (0.45, 0.5, 0.55):
        x = verdicts("mostly ties", rate, 200_000, np.random.default_rng(0))
        assert x.mean() == pytest.approx(rate, abs=0.003) and np.mean(x == 0.5) == pytest.approx(0.9, abs=0.003)


def test_a_short_run_prints_every_case_and_the_lowest():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "coverage.py"), "--intervals", "score,paired", "--draws", "20"],
                            capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    rows = [line for line in result.stdout.splitlines() if "n=" in line and not line.startswith("lowest")]
    assert len(rows) == 57 + 50
    coverages = [float(line.split()[-2]) for line in rows]
    assert all(0 <= c <= 1 for c in coverages) and np.mean(coverages) > 0.9  # at 20 draws, noisy, but not broken
    assert result.stdout.count("lowest:") == 2
