import numpy as np
import pytest

from harness.scoring import BootstrapConfig, bootstrap_win_rate


def test_paper_bootstrap_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    prefs = rng.choice([0.0, 0.5, 1.0], size=1500, p=[0.3, 0.1, 0.6])
    result = bootstrap_win_rate(prefs, BootstrapConfig(seed=7))
    # the same protocol written as a loop: first 1024 items, 20 resamples of 512 with replacement
    items = prefs[:1024]
    loop_rng = np.random.default_rng(7)
    idx = loop_rng.integers(0, 1024, size=(20, 512))
    rates = [float(np.mean([items[j] for j in row])) for row in idx]
    assert result.win_rate == pytest.approx(np.mean(rates))
    assert result.std == pytest.approx(np.std(rates, ddof=1))
    assert result.n == 1024 and result.sample_size == 512 and result.resamples == 20
    assert result.point == pytest.approx(items.mean())
    assert (result.wins, result.ties, result.losses) == (
        int((items == 1).sum()), int((items == 0.5).sum()), int((items == 0).sum())
    )
    assert result.ci[0] <= result.win_rate <= result.ci[1] and result.level == 0.95


def test_ties_count_half_and_seed_makes_it_deterministic():
    prefs = [1, 0.5, 0.5, 0]
    a = bootstrap_win_rate(prefs, BootstrapConfig(resamples=50, seed=3))
    b = bootstrap_win_rate(prefs, BootstrapConfig(resamples=50, seed=3))
    assert a == b and a.point == 0.5 and a.sample_size == 4  # capped at n
    assert a.ties == 2


def test_settable_sizes_and_level():
    prefs = np.linspace(0, 1, 101)
    result = bootstrap_win_rate(prefs, BootstrapConfig(n_items=50, resamples=200, sample_size=30, level=0.5))
    assert result.n == 50 and result.sample_size == 30 and result.level == 0.5
    narrow, wide = result.ci, bootstrap_win_rate(prefs, BootstrapConfig(n_items=50, resamples=200, sample_size=30, level=0.99)).ci
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]


def test_rejects_bad_preferences():
    with pytest.raises(ValueError):
        bootstrap_win_rate([0.2, float("nan")])
    with pytest.raises(ValueError):
        bootstrap_win_rate([])
