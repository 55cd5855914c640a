"""Scoring a run: its verdicts as one DataFrame, and every table the harness prints from it.

``verdict_frame`` joins the stored verdicts with the texts they judged (for lengths) and the
examples' order in the test split (the paper's protocol takes the first 1,024). ``score_verdicts``
turns any such frame into the summary's tables: win rates per (method, opponent, revision), and
paired differences on the same examples. ``harness run``, ``harness score``, the leaderboard and
a notebook (``harness.load_run``) all go through these two functions.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from harness.scoring import BootstrapConfig, holm, paired_difference, win_rate

REFERENCE = "reference"
VERDICT_COLUMNS = ["example_id", "position", "method", "opponent", "revision", "preference", "error", "length", "opponent_length", "first", "second"]


def words(text: str | None) -> float:
    """A text's length in words: the same measure for model completions and human references."""
    return float(len(text.split())) if isinstance(text, str) else np.nan


def verdict_frame(judgments: list[dict], generations: list[dict], examples: list[dict]) -> pd.DataFrame:
    """One row per verdict: who was compared with whom, the preference (NaN: the verdict failed),
    both texts' lengths in words, the example's position in the test split, and the raw verdict
    p(A better) of each order (``first``: the candidate shown as A; ``second``: shown as B)."""
    from harness.diagnostics import order_columns

    position = {str(ex["id"]): i for i, ex in enumerate(examples)}
    reference = {str(ex["id"]): ex["reference"] for ex in examples}
    text = {(g["example_id"], g["method"], g["revision"]): g["text"] for g in generations}
    rows = []
    for j in judgments:
        eid, rev = j["example_id"], j["revision"]
        opponent_text = reference.get(eid) if j["opponent"] == REFERENCE else text.get((eid, j["opponent"], rev))
        rows.append({"example_id": eid, "position": position.get(eid, len(position)), "method": j["method"], "opponent": j["opponent"],
                     "revision": rev, "preference": np.nan if j["preference"] is None else float(j["preference"]), "error": j.get("error", ""),
                     "length": words(text.get((eid, j["method"], rev))), "opponent_length": words(opponent_text)})  # fmt: skip
    frame = pd.DataFrame(rows, columns=VERDICT_COLUMNS[:-2])
    return pd.concat([frame, order_columns(judgments)], axis=1)


def _sorted_groups(frame: pd.DataFrame):
    groups = frame.sort_values("position").groupby(["method", "opponent", "revision"], sort=False)
    return sorted(groups, key=lambda kv: (kv[0][1] != REFERENCE, kv[0][2], kv[0][0], kv[0][1]))


def score_verdicts(frame: pd.DataFrame, config: BootstrapConfig = BootstrapConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(win rates, paired differences) of a verdict frame (the columns of ``verdict_frame``;
    ``length`` and ``opponent_length`` may be missing, then no length control is computed)."""
    has_lengths = {"length", "opponent_length"} <= set(frame.columns)
    rows = []
    for (method, opponent, revision), group in _sorted_groups(frame):
        judged = group[group["preference"].notna()]
        row = {"method": method, "opponent": opponent, "revision": int(revision), "failed": int(len(group) - len(judged)), "level": config.level}
        if judged.empty:
            rows.append({**row, "win_rate": None, "ci": None, "n": 0, "wins": 0, "ties": 0, "losses": 0})
            continue
        lengths = (judged["length"].to_numpy(), judged["opponent_length"].to_numpy()) if has_lengths and judged[["length", "opponent_length"]].notna().all().all() else None
        rows.append({**row, **win_rate(judged["preference"].to_numpy(), lengths, config)})
    return pd.DataFrame(rows), pd.DataFrame(paired_rows(frame, config))


def paired_rows(frame: pd.DataFrame, config: BootstrapConfig) -> list[dict]:
    """Differences of win rates against the references on the same examples: every two methods at
    each revision (with their head-to-head verdicts where judged), and every revision against
    revision 0 of the same method."""
    ref = frame[(frame["opponent"] == REFERENCE) & frame["preference"].notna()]
    table = ref.pivot_table(index="example_id", columns=["method", "revision"], values="preference", aggfunc="last")
    methods = list(dict.fromkeys(ref.sort_values("method")["method"]))
    revisions = sorted(ref["revision"].unique())
    out = []

    def compare(kind: str, a: tuple, b: tuple, **extra) -> None:
        if a not in table.columns or b not in table.columns:
            return
        both = table[[a, b]].dropna()
        if both.empty:
            return
        out.append({"kind": kind, "method": a[0], "revision": int(a[1]), "versus_method": b[0], "versus_revision": int(b[1]),
                    **paired_difference(both[a].to_numpy(), both[b].to_numpy(), config), "level": config.level, **extra})  # fmt: skip

    judged = frame[(frame["opponent"] != REFERENCE) & frame["preference"].notna()]
    for rev in revisions:
        for x, y in itertools.combinations(methods, 2):
            if not ((judged["method"] == x) & (judged["opponent"] == y)).any() and ((judged["method"] == y) & (judged["opponent"] == x)).any():
                x, y = y, x  # the orientation the head-to-head verdicts were judged in
            h2h = judged[(judged["method"] == x) & (judged["opponent"] == y) & (judged["revision"] == rev)]
            head = win_rate(h2h.sort_values("position")["preference"].to_numpy(), None, config) if len(h2h) else None
            compare("methods", (x, rev), (y, rev), head_to_head=None if head is None else {"win_rate": head["win_rate"], "ci": head["ci"], "n": head["n"]})
    for method in methods:
        for rev in revisions:
            if rev > 0:
                compare("revisions", (method, rev), (method, 0))
    for row, adjusted in zip(out, holm([row["p_value"] for row in out])):  # the table is one family: read together, scanned for what excludes 0
        row["p_holm"] = float(adjusted)
    return out


def records(frame: pd.DataFrame) -> list[dict]:
    """A table as JSON-ready rows (NaN as null)."""
    return [] if frame.empty else [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value):
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class JudgedBy:
    """One judge's verdicts of a run's current texts."""

    fingerprint: str
    config: dict  # the judge's describe_config()
    verdicts: list[dict]
    primary: bool  # the run's own judge, whose verdicts make the headline tables

    @property
    def label(self) -> str:
        c = self.config
        return f"{c.get('judge', '?')}:{c.get('annotator') or c.get('model', '')}"


def judge_labels(judges: list[JudgedBy]) -> dict[str, str]:
    """fingerprint -> a name for each judge, unique: two judges of the same model (at another
    endpoint, with another prompt) get their fingerprint's start beside it."""
    counts: dict[str, int] = {}
    for j in judges:
        counts[j.label] = counts.get(j.label, 0) + 1
    return {j.fingerprint: j.label if counts[j.label] == 1 else f"{j.label} ({j.fingerprint[:6]})" for j in judges}


def summarise(task: str, meta: dict, judges: list[JudgedBy], generations: list[dict], examples: list[dict], config: BootstrapConfig) -> dict:
    """summary.json: the primary judge's tables (``score_verdicts``), every judge's diagnostics and
    win rates against the references, their agreement, and how it was all computed."""
    from harness.diagnostics import agreement, judge_diagnostics

    labels = judge_labels(judges)
    frames = {labels[j.fingerprint]: verdict_frame(j.verdicts, generations, examples) for j in judges}
    primary = next(j for j in judges if j.primary)
    results, paired = score_verdicts(frames[labels[primary.fingerprint]], config)
    judge_rows = []
    for j in judges:
        frame = frames[labels[j.fingerprint]]
        row = {"judge": labels[j.fingerprint], "fingerprint": j.fingerprint, "config": j.config, "primary": j.primary, "diagnostics": judge_diagnostics(frame)}
        if not j.primary:
            others, _ = score_verdicts(frame[frame["opponent"] == REFERENCE], config)
            row["results"] = records(others)
        judge_rows.append(row)
    scoring = {
        "interval": config.describe(),
        "win_rate_interval": config.describe("win rates"),
        "paired_interval": config.describe("paired differences"),
        "paper_protocol": f"mean and std of {config.paper_resamples} resamples of {min(config.paper_sample_size, config.paper_n_items)} out of the first "
                          f"{config.paper_n_items} items (the paper's Sec. 6 and Appendix C.3)",
        "length_control": "logistic regression of the verdict on tanh(length difference in words / its std), read at zero "
                          "difference (AlpacaEval 2's length control), fitted with Firth's bias reduction scaled by the verdicts' "
                          "dispersion; Wald interval from its information, scaled by the same dispersion, Student's t quantile "
                          "with n - 2 degrees of freedom",
        "items": len(examples),
    }  # fmt: skip
    if len(paired):
        alpha = f"{1 - config.level:.2g}"
        scoring["multiplicity"] = (f"p: the test each paired interval inverts (below {alpha} where it excludes 0); p (Holm): adjusted over "
                                   f"the run's {len(paired)} paired comparisons, below {alpha} where a difference holds at the whole "
                                   f"table's {config.level:.0%} family-wise level")  # fmt: skip
    few = sum(0 < r["n"] < config.tested_from for r in (*records(results), *records(paired)))
    if few:
        scoring["few_note"] = (f"{few} row(s) of these tables rest on fewer than {config.tested_from} verdicts, below which their intervals"
                               f"' {config.level:.0%} level is not shown to hold (benchmarks/coverage.py): read them as rough")  # fmt: skip
    if len(examples) < config.paper_n_items:
        scoring["paper_note"] = (f"this run has {len(examples)} examples, fewer than the {config.paper_n_items} the paper's protocol takes: "
                                 f"its mean and std are of resamples of {min(config.paper_sample_size, len(examples))} out of "
                                 f"{len(examples)} and are not comparable with the paper's")  # fmt: skip
    return {"task": task, "results": records(results), "paired": records(paired), "judges": judge_rows, "agreement": agreement(frames),
            "meta": {**meta, "bootstrap": asdict(config), "scoring": scoring}}  # fmt: skip


def interval_text(interval) -> str:
    """[low, high] as the tables print it; "-" when there is none."""
    if not interval:
        return "-"
    low, high = (round(bound, 3) + 0.0 for bound in interval)  # + 0.0: a bound just below zero prints 0.000, not -0.000
    return f"[{low:.3f}, {high:.3f}]"


def p_text(p: float | None) -> str:
    """A p-value as the tables print it: three decimals, "<0.001" below, "-" when there is none
    (a summary written before the harness computed them)."""
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def comparison_label(p: dict, revision: bool = True) -> str:
    """What a paired difference compares: "a - b (rev k)" (two methods; ``revision=False`` for a
    table with a revision column of its own), "m: rev k - rev 0" (two revisions)."""
    if p["kind"] == "methods":
        return f"{p['method']} - {p['versus_method']}" + (f" (rev {p['revision']})" if revision else "")
    return f"{p['method']}: rev {p['revision']} - rev {p['versus_revision']}"


def print_tables(summary: dict, console) -> None:
    """Every table of a summary, as ``harness run`` and ``harness score`` show them."""
    from rich.table import Table

    scoring, level = summary["meta"].get("scoring", {}), summary["meta"]["bootstrap"]["level"]
    results = summary["results"]
    ref = Table(title=f"{summary['task']}: win rate against the references ({level:.0%} CI)")
    for col in ("method", "rev", "win rate", "CI", "length-controlled", "words (ref)", "paper: mean ± std", "n", "W/T/L", "failed"):
        ref.add_column(col)
    h2h = Table(title=f"head to head: the row's method against the opponent at the same revision ({level:.0%} CI)")
    for col in ("method", "opponent", "rev", "win rate", "CI", "n", "W/T/L", "failed"):
        h2h.add_column(col)
    for r in results:
        if r["win_rate"] is None:
            cells = ["-"] * 5 if r["opponent"] == REFERENCE else ["-", "-"]
        elif r["opponent"] == REFERENCE:
            lc = f"{r['length_controlled']:.3f} {interval_text(r['length_controlled_ci'])}" if r.get("length_controlled") is not None else "-"
            words_cell = f"{r['mean_length']:.1f} ({r['opponent_mean_length']:.1f})" if r.get("mean_length") is not None else "-"
            paper = r["paper"]
            cells = [f"{r['win_rate']:.3f}", interval_text(r["ci"]), lc, words_cell, f"{paper['mean']:.3f} ± {paper['std']:.3f}" + ("" if paper["complete"] else " *")]
        else:
            cells = [f"{r['win_rate']:.3f}", interval_text(r["ci"])]
        counts = [str(r["n"]), f"{r['wins']}/{r['ties']}/{r['losses']}", str(r["failed"])]
        if r["opponent"] == REFERENCE:
            ref.add_row(r["method"], str(r["revision"]), *cells, *counts)
        else:
            h2h.add_row(r["method"], r["opponent"], str(r["revision"]), *cells, *counts)
    console.print(ref)
    if h2h.row_count:
        console.print(h2h)
    paired = summary.get("paired") or []
    if paired:
        table = Table(title=f"paired differences of win rates against the references, on the same examples ({level:.0%} CI)")
        for col in ("comparison", "difference", "CI", "p", "p (Holm)", "n", "better/same/worse", "head to head"):
            table.add_column(col)
        for p in paired:
            head = p.get("head_to_head")
            table.add_row(comparison_label(p), f"{p['difference']:+.3f}", interval_text(p["ci"]), p_text(p.get("p_value")), p_text(p.get("p_holm")), str(p["n"]),
                          f"{p['a_better']}/{p['same']}/{p['b_better']}", f"{head['win_rate']:.3f} {interval_text(head['ci'])} (n {head['n']})" if head else "")  # fmt: skip
        console.print(table)
    print_judges(summary, console)
    console.print(f"intervals: {scoring.get('interval', '')}; length control: AlpacaEval 2's, at zero length difference")
    if scoring.get("multiplicity"):
        console.print(scoring["multiplicity"])
    if scoring.get("few_note"):
        console.print(f"note: {scoring['few_note']}", style="yellow")
    if any(not r["paper"]["complete"] for r in results if r.get("paper")):
        console.print(f"* {scoring.get('paper_note', 'fewer items than the paper protocol takes')}", style="yellow")


def _share(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_judges(summary: dict, console) -> None:
    """The judges' diagnostics and, with two or more, their agreement."""
    from rich.table import Table

    judges = summary.get("judges") or []
    if not judges:
        return
    table = Table(title="judge diagnostics (from the stored verdicts)")
    for col in ("judge", "verdicts", "failed", "tie rate", "position consistency", "first-position win rate", "mean verdict by words longer"):
        table.add_column(col)
    for j in judges:
        d = j["diagnostics"]
        by_length = "  ".join(f"{b['words_longer']}: {_share(b['mean_verdict'])}" for b in d.get("by_length", []) if b["n"])
        table.add_row(j["judge"] + (" (primary)" if j["primary"] and len(judges) > 1 else ""), str(d["verdicts"]), str(d["failed"]), _share(d["tie_rate"]),
                      _share(d["position_consistency"]), _share(d["first_position_win_rate"]), by_length)  # fmt: skip
    console.print(table)
    if summary.get("agreement"):
        table = Table(title="agreement of the judges on the same pairs")
        for col in ("judge", "versus", "pairs", "Cohen's kappa", "same label", "win-rate correlation"):
            table.add_column(col)
        for a in summary["agreement"]:
            table.add_row(a["judge"], a["versus_judge"], str(a["pairs"]), _share(a["kappa"]), _share(a["label_agreement"]), _share(a["win_rate_correlation"]))
        console.print(table)


def write_summary(store, summary: dict, console) -> None:
    """summary.json and the leaderboard page of one run, and its tables on screen."""
    from harness.leaderboards.render import write_pages

    store.write_json("summary.json", summary)
    page = write_pages(store.path("leaderboard.html"), [(summary, store.root)])
    print_tables(summary, console)
    if summary["meta"].get("judge_note"):
        console.print(f"note: {summary['meta']['judge_note']}", style="yellow")
    console.print(f"summary: {store.path('summary.json')}")
    console.print(f"leaderboard: {page}")
