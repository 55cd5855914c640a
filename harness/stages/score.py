"""Scoring: judgments -> bootstrapped win rates per (method, opponent, revision), the summary rows."""

from __future__ import annotations

from collections import defaultdict

from harness.scoring import BootstrapConfig, bootstrap_win_rate


def score_judgments(judgments: list[dict], config: BootstrapConfig, order: dict[str, int]) -> list[dict]:
    """One row per (method, opponent, revision): win rate of ``method`` against ``opponent``
    ("reference" or another method), its bootstrap std and CI, and the verdicts that failed
    (never scored, always counted). ``order`` gives each example's position in the test split:
    the bootstrap takes the first n examples in that order, as the paper takes the first 1,024."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for j in judgments:
        groups[(j["method"], j["opponent"], j["revision"])].append(j)
    rows = []
    for (method, opponent, revision), items in sorted(groups.items(), key=lambda kv: (kv[0][1] != "reference", kv[0][2], kv[0][0], kv[0][1])):
        items = sorted(items, key=lambda j: order[j["example_id"]])
        prefs = [j["preference"] for j in items if j["preference"] is not None]
        failed = len(items) - len(prefs)
        base = {"method": method, "opponent": opponent, "revision": revision, "failed": failed}
        if not prefs:
            rows.append({**base, "win_rate": None, "std": None, "ci": None, "n": 0, "wins": 0, "ties": 0, "losses": 0})
            continue
        rows.append({**base, **bootstrap_win_rate(prefs, config).as_row()})
    return rows
