"""Is the judge any good? Diagnostics computed from the verdicts a run already stored.

For one judge:
- ``position_consistency``: of the pairs judged in both orders, the share where both orders
  favour the same text (a judge that always picks the first-shown text scores 0);
- ``first_position_win_rate``: over every single-order verdict, how often the text shown first
  won (0.5 for an unbiased judge);
- ``tie_rate``: pairs whose verdict is exactly 1/2 (with both orders, an order-inconsistent pair);
- ``failed``: verdicts that failed (unparseable answers, refused or lost requests), by kind;
- ``by_length``: the mean verdict for the candidate by how many words longer it is than its opponent.

For two judges of the same pairs: Cohen's kappa of their win/tie/loss labels, and the correlation
of their win rates per (method, opponent, revision).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

LENGTH_BINS = [-np.inf, -20, -5, 5, 20, np.inf]  # candidate words minus opponent words
LENGTH_LABELS = ["< -20", "-20..-5", "-5..5", "5..20", "> 20"]


def order_columns(judgments: list[dict]) -> pd.DataFrame:
    """Per verdict: the raw p(A better) with the candidate shown first, and with it shown second."""
    rows = []
    for j in judgments:
        first = second = np.nan
        for k, order in enumerate(j.get("orders") or []):
            shown_first = order.get("candidate_first", k == 0)
            if order.get("preference") is not None:
                if shown_first:
                    first = order["preference"]
                else:
                    second = order["preference"]
        rows.append({"first": first, "second": second})
    return pd.DataFrame(rows, columns=["first", "second"])


def judge_diagnostics(frame: pd.DataFrame) -> dict:
    """Diagnostics of one judge's verdict frame (``verdict_frame`` with ``first`` and ``second``)."""
    judged = frame[frame["preference"].notna()]
    both = judged[judged["first"].notna() & judged["second"].notna()]
    # candidate-first verdict p1 favours the candidate when > 1/2; opponent-first p2 when < 1/2
    consistent = np.sign(both["first"] - 0.5) == np.sign(0.5 - both["second"])
    raw = pd.concat([judged["first"], judged["second"]]).dropna()
    errors = frame.loc[frame["preference"].isna(), "error"].fillna("")
    kinds = errors.map(lambda e: "unparseable" if "no verdict" in e else "refused" if "refused" in e else "request failed" if e else "unknown")
    diagnostics = {
        "verdicts": int(len(frame)),
        "failed": int(frame["preference"].isna().sum()),
        "failed_by_kind": kinds.value_counts().to_dict(),
        "tie_rate": float((judged["preference"] == 0.5).mean()) if len(judged) else None,
        "position_consistency": float(consistent.mean()) if len(both) else None,
        "pairs_in_both_orders": int(len(both)),
        "first_position_win_rate": float(raw.mean()) if len(raw) else None,
    }
    if {"length", "opponent_length"} <= set(frame.columns) and len(judged):
        bins = pd.cut(judged["length"] - judged["opponent_length"], LENGTH_BINS, labels=LENGTH_LABELS)
        grouped = judged.groupby(bins, observed=False)["preference"]
        diagnostics["by_length"] = [{"words_longer": str(label), "mean_verdict": None if np.isnan(m) else float(m), "n": int(n)}
                                    for (label, m), n in zip(grouped.mean().items(), grouped.size())]  # fmt: skip
    return diagnostics


def _labels(preference: pd.Series) -> pd.Series:
    return np.sign(preference - 0.5)  # win 1, tie 0, loss -1


def cohens_kappa(a: pd.Series, b: pd.Series) -> float | None:
    """Agreement of two label series beyond chance (Cohen, 1960)."""
    if len(a) == 0:
        return None
    observed = float((a.to_numpy() == b.to_numpy()).mean())
    categories = set(a) | set(b)
    expected = sum(float((a == c).mean()) * float((b == c).mean()) for c in categories)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def agreement(frames: dict[str, pd.DataFrame]) -> list[dict]:
    """Every two judges (name -> verdict frame) on the pairs both judged."""
    keys = ["example_id", "method", "opponent", "revision"]
    out = []
    for (name_a, a), (name_b, b) in itertools.combinations(frames.items(), 2):
        both = a[a["preference"].notna()].merge(b[b["preference"].notna()], on=keys, suffixes=("_a", "_b"))
        rates = both.groupby(["method", "opponent", "revision"])[["preference_a", "preference_b"]].mean()
        correlation = float(np.corrcoef(rates["preference_a"], rates["preference_b"])[0, 1]) if len(rates) > 1 and rates.std().gt(0).all() else None
        out.append({"judge": name_a, "versus_judge": name_b, "pairs": int(len(both)), "kappa": cohens_kappa(_labels(both["preference_a"]), _labels(both["preference_b"])),
                    "label_agreement": float((_labels(both["preference_a"]) == _labels(both["preference_b"])).mean()) if len(both) else None,
                    "win_rate_correlation": correlation, "groups": int(len(rates))})  # fmt: skip
    return out
