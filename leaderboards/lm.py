"""The page of text runs: win rate by revision (the paper's Fig. 3 and 5) with their
intervals, head-to-head matrices (Table 1), paired differences on the same examples (a table and
a forest plot), the methods' training curves, sortable tables with CSV and Markdown exports, an
example browser and the runs' metadata. Every number comes from summary.json, which
``harness.stages.score`` computed, but the training curves, which come from the trainer's logs.

Every model and judge text reaches the page as JSON data that the page's script puts into the DOM
with ``textContent``: a generation holding HTML or a script shows as text and never runs. The
example browser renders one example at a time from that data, so 1024 examples x 6 revisions x 5
methods stay responsive.
"""

from __future__ import annotations

from collections import defaultdict

import plotly.graph_objects as go

from harness.leaderboards.page import Section, Table, render_page, script_json
from harness.leaderboards.settings import row_labels, run_labels
from harness.leaderboards.training import MAX_POINTS, training_figure
from harness.stages.score import comparison_label, interval_text

UNTITLED_TOP = 30  # px above a figure with no title: plotly's default 100 left a gap under each section's text
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
COLUMNS = ["task", "method", "model", "training data", "judge", "revision", "win rate", "CI", "length-controlled", "LC CI", "words",
           "opponent words", "paper mean", "paper std", "n", "W/T/L", "failed", "settings", "run"]  # fmt: skip
PAIRED_COLUMNS = ["task", "comparison", "revision", "difference", "CI", "p", "p (Holm)", "n", "better/same/worse", "head to head", "head-to-head CI", "settings", "run"]


def _among(label: str, run: dict, many: bool) -> str:
    """What names a run in a figure among ``many``: what sets it apart (``label``), or its folder
    where nothing does; "" for a run alone."""
    return (label or run["name"]) if many else ""


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _level(run: dict) -> float:
    return run["summary"]["meta"].get("bootstrap", {}).get("level", 0.95)


def _interval(run: dict, kind: str) -> str:
    """How the run's intervals of ``kind`` ("win_rate" or "paired") were computed, as its summary
    describes them (a summary from before they were told apart describes both at once)."""
    scoring = run["summary"]["meta"].get("scoring", {})
    return scoring.get(f"{kind}_interval", scoring.get("interval", "bootstrap"))


def _methods(run: dict) -> list[str]:
    """The run's methods, in the order of its results."""
    return list(dict.fromkeys(r["method"] for r in run["summary"]["results"] if r["opponent"] == "reference"))


def method_colors(runs: list[dict]) -> dict[tuple[str, str], str]:
    """One colour per (run, method), the same in every figure of the page."""
    keys = [(run["name"], method) for run in runs for method in _methods(run)]
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(keys)}


def revision_figure(runs: list[dict], many: bool) -> go.Figure:
    """Win rate against the references per revision, with its interval as a band; with ``many``
    runs, each line named by what sets it apart (leaderboards/settings.py)."""
    fig = go.Figure()
    labels, colors = row_labels(runs), method_colors(runs)
    for run in runs:
        by_method = defaultdict(list)
        for r in run["summary"]["results"]:
            if r["opponent"] == "reference" and r["win_rate"] is not None:
                by_method[r["method"]].append(r)
        for method, rows in by_method.items():
            rows.sort(key=lambda r: r["revision"])
            x = [r["revision"] for r in rows]
            y = [r["win_rate"] for r in rows]
            low, high = [r["ci"][0] for r in rows], [r["ci"][1] for r in rows]
            color = colors[(run["name"], method)]
            who = _among(labels[(run["name"], method)], run, many)
            name = f"{method} ({who})" if who else method
            fig.add_scatter(x=x + x[::-1], y=high + low[::-1], fill="toself", fillcolor=_rgba(color, 0.15), line={"width": 0},
                            hoverinfo="skip", showlegend=False, legendgroup=name)  # fmt: skip
            fig.add_scatter(x=x, y=y, mode="lines+markers", name=name, line={"color": color}, legendgroup=name, customdata=list(zip(low, high)),
                            hovertemplate=f"{name}<br>revision %{{x}}: %{{y:.3f}} [%{{customdata[0]:.3f}}, %{{customdata[1]:.3f}}]<extra></extra>")  # fmt: skip
    fig.update_layout(height=420, xaxis_title="revision N", yaxis_title="win rate against the references",
                      xaxis={"dtick": 1}, yaxis={"range": [0, 1]}, legend_title="method", margin={"t": UNTITLED_TOP})  # fmt: skip
    return fig


def paired_figure(run: dict, label: str) -> go.Figure | None:
    """A forest plot: each paired difference of win rates with its interval; zero is no difference.
    ``label`` names the run among several ("" for a run alone)."""
    paired = run["summary"].get("paired") or []
    if not paired:
        return None
    labels = [comparison_label(p) + (f" [{label}]" if label else "") for p in paired]
    diff = [p["difference"] for p in paired]
    holds = [p.get("p_holm") is not None and p["p_holm"] < 1 - _level(run) for p in paired]  # holds for the whole table (Holm)
    fig = go.Figure()
    fig.add_scatter(x=diff, y=labels, mode="markers", showlegend=False,
                    marker={"color": ["#d62728" if h else "#1f77b4" for h in holds], "symbol": ["diamond" if h else "circle" for h in holds], "size": 9},
                    error_x={"type": "data", "symmetric": False, "color": "#1f77b4", "array": [p["ci"][1] - p["difference"] for p in paired],
                             "arrayminus": [p["difference"] - p["ci"][0] for p in paired]},
                    customdata=[[interval_text(p["ci"]), _cell(p.get("p_value"), ".3g"), _cell(p.get("p_holm"), ".3g")] for p in paired],
                    hovertemplate="%{y}: %{x:+.3f} %{customdata[0]}, p %{customdata[1]}, p (Holm) %{customdata[2]}<extra></extra>")  # fmt: skip
    fig.add_vline(x=0, line={"color": "#888", "dash": "dash"})
    fig.update_layout(height=max(150, 28 * len(paired) + 50), xaxis_title="difference of win rates against the references",
                      xaxis={"exponentformat": "none"},  # a proxy judge's differences of 1e-6 read 0.000001, not plotly's "1µ"
                      yaxis={"autorange": "reversed"}, margin={"l": 260, "t": UNTITLED_TOP})  # fmt: skip
    return fig


def head_to_head_figure(run: dict, label: str = "") -> go.Figure | None:
    """Row method's win rate against the column method, one heatmap per revision (Table 1);
    ``label`` names the run among several."""
    rows = [r for r in run["summary"]["results"] if r["opponent"] != "reference" and r["win_rate"] is not None]
    if not rows:
        return None
    methods = list(dict.fromkeys([r["method"] for r in rows] + [r["opponent"] for r in rows]))
    revisions = sorted({r["revision"] for r in rows})
    fig = go.Figure()
    for k, rev in enumerate(revisions):
        z = [[None] * len(methods) for _ in methods]
        for r in rows:
            if r["revision"] == rev:
                i, j = methods.index(r["method"]), methods.index(r["opponent"])
                z[i][j], z[j][i] = r["win_rate"], 1 - r["win_rate"]
        text = [[f"{v:.1%}" if v is not None else "" for v in row] for row in z]
        fig.add_heatmap(z=z, x=methods, y=methods, zmin=0, zmax=1, colorscale="RdBu", text=text, texttemplate="%{text}",
                        visible=k == 0, hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>", colorbar={"title": "row wins"})  # fmt: skip
    buttons = [{"label": f"revision {rev}", "method": "update", "args": [{"visible": [i == k for i in range(len(revisions))]}]}
               for k, rev in enumerate(revisions)]  # fmt: skip
    fig.update_layout(height=380, updatemenus=[{"buttons": buttons, "direction": "down", "x": 0, "y": 1.18, "xanchor": "left"}],
                      xaxis_title="opponent", yaxis_title="method", yaxis={"autorange": "reversed"})  # fmt: skip
    if label:
        fig.update_layout(title={"text": f"head to head: {label}", "x": 0.99, "xanchor": "right"})
    return fig


JUDGE_COLUMNS = ["judge", "config", "verdicts", "failed", "tie rate", "position consistency", "first-position win rate", "run"]
AGREEMENT_COLUMNS = ["judge", "versus", "pairs", "Cohen's kappa", "same label", "win-rate correlation", "run"]


def judges_section(runs: list[dict], many: bool) -> Section | None:
    """Is the judge any good: its diagnostics from the stored verdicts, the mean verdict by length
    difference, and the agreement of two judges on the same pairs."""
    rows, agreement, fig = [], [], go.Figure()
    labels = run_labels(runs)
    for run in runs:
        who = _among(labels[run["name"]], run, many)
        for j in run["summary"].get("judges") or []:
            d, config = j["diagnostics"], j["config"]
            source = config.get("config") or config.get("prompts") or ""
            rows.append([j["judge"] + (" (primary)" if j["primary"] else ""), source + (f" sha256 {config['config_sha256']}" if config.get("config_sha256") else ""),
                         d["verdicts"], d["failed"], _cell(d["tie_rate"], ".2f"), _cell(d["position_consistency"], ".2f"),
                         _cell(d["first_position_win_rate"], ".2f"), run["name"]])  # fmt: skip
            bins = [b for b in d.get("by_length", []) if b["n"]]
            if bins:
                fig.add_bar(x=[b["words_longer"] for b in bins], y=[b["mean_verdict"] for b in bins], name=f"{j['judge']} ({who})" if who else j["judge"],
                            customdata=[b["n"] for b in bins], hovertemplate="%{x} words longer: %{y:.3f} (n %{customdata})<extra></extra>")  # fmt: skip
        for a in run["summary"].get("agreement") or []:
            agreement.append([a["judge"], a["versus_judge"], a["pairs"], _cell(a["kappa"], ".2f"), _cell(a["label_agreement"], ".2f"),
                              _cell(a["win_rate_correlation"], ".2f"), run["name"]])  # fmt: skip
    if not rows:
        return None
    fig.update_layout(height=340, barmode="group", xaxis_title="candidate's words minus the opponent's", yaxis_title="mean verdict for the candidate",
                      yaxis={"range": [0, 1]}, margin={"t": UNTITLED_TOP})  # fmt: skip
    tables = [Table(JUDGE_COLUMNS, rows, caption="Diagnostics from the stored verdicts", id="judges")]
    if agreement:
        tables.append(Table(AGREEMENT_COLUMNS, agreement, caption="Two judges on the same pairs", id="agreement"))
    return Section(
        title="Judges",
        text=("Position consistency: the share of pairs judged in both orders where both orders favour the same text (a judge that "
              "always picks the first-shown text scores 0). First-position win rate: how often the text shown first won (0.5 for an "
              "unbiased judge). The bars show the mean verdict by how much longer the candidate is: a rising staircase is a length bias."),
        figures=[fig], tables=tables,
    )  # fmt: skip


def _cell(value, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def table_rows(runs: list[dict]) -> list[list]:
    out, labels = [], row_labels(runs)
    for run in runs:
        meta = run["summary"]["meta"]
        judge = meta.get("judge", {})
        judge_label = f"{judge.get('judge', '?')}:{judge.get('model', '')}" + (" (proxy)" if meta.get("judge_is_proxy") else "")
        for r in run["summary"]["results"]:
            opponent = "" if r["opponent"] == "reference" else f" vs {r['opponent']}"
            paper = r.get("paper") or {}
            paper_mean = _cell(paper.get("mean")) + ("" if paper.get("complete", True) else " *")
            out.append([run["summary"]["task"], r["method"] + opponent, meta.get("model", ""), meta.get("training_data", ""), judge_label, r["revision"],
                        _cell(r["win_rate"]), interval_text(r.get("ci")), _cell(r.get("length_controlled")), interval_text(r.get("length_controlled_ci")),
                        _cell(r.get("mean_length"), ".1f"), _cell(r.get("opponent_mean_length"), ".1f"), paper_mean, _cell(paper.get("std")),
                        r["n"], f"{r['wins']}/{r['ties']}/{r['losses']}", r["failed"], labels[(run["name"], r["method"])], run["name"]])  # fmt: skip
    return out


def results_table(runs: list[dict]) -> Table:
    """Every win rate of the runs, one row each; its CSV and Markdown are the page's name with .csv and .md."""
    return Table(COLUMNS, table_rows(runs), caption="Click a column header to sort", export="", id="results")


def paired_table(runs: list[dict]) -> Table:
    """Every paired difference of the runs, one row each (NAME-paired.csv and .md); no rows for runs
    of one method and revision 0 alone."""
    return Table(PAIRED_COLUMNS, paired_table_rows(runs), caption="Click a column header to sort", export="-paired", id="paired")


def exported_tables(runs: list[dict]) -> list[Table]:
    """The page's tables that are written beside it as CSV and Markdown, where they have rows."""
    return [results_table(runs), paired_table(runs)]


def paired_table_rows(runs: list[dict]) -> list[list]:
    out, labels = [], run_labels(runs)
    for run in runs:
        for p in run["summary"].get("paired") or []:
            head = p.get("head_to_head") or {}
            out.append([run["summary"]["task"], comparison_label(p, revision=False), p["revision"], f"{p['difference']:+.3f}", interval_text(p["ci"]),
                        _cell(p.get("p_value"), ".3g"), _cell(p.get("p_holm"), ".3g"), p["n"], f"{p['a_better']}/{p['same']}/{p['b_better']}", _cell(head.get("win_rate")), interval_text(head.get("ci")), labels[run["name"]],
                        run["name"]])  # fmt: skip
    return out


def browser_data(run: dict, label: str = "") -> dict:
    """What the example browser shows, read from the run folder: sources, references, every
    method's revisions the summary scored, and their verdicts against the reference with rationales;
    ``label``, what sets the run apart from the others on the page."""
    from harness.runs import run_records

    _, test, gens, judges = run_records(run["dir"])
    judgments = next((j.verdicts for j in judges if j.primary), [])
    examples = {ex["id"]: {"id": ex["id"], "source": ex.get("source", ""), "reference": ex.get("reference", ""), "revisions": {}} for ex in test}
    for g in gens:
        examples[g["example_id"]]["revisions"].setdefault(g["method"], {})[str(g["revision"])] = {"text": g["text"]}
    for j in judgments:
        slot = examples[j["example_id"]]["revisions"].get(j["method"], {}).get(str(j["revision"]))
        if slot is not None and j["opponent"] == "reference":
            slot["preference"] = j["preference"]
            slot["error"] = j.get("error", "")
            slot["rationales"] = [o.get("rationale") or o.get("error", "") for o in j.get("orders", [])]
    return {"run": run["name"], "label": label, "examples": list(examples.values())}


def _unpaired_note(runs: list[dict]) -> str:
    """What sets apart lines of several runs of one task besides their methods: other examples or
    another judge (paired comparisons, on the same examples, are made within a run)."""
    examples = {tuple(r["summary"]["meta"].get("example_ids") or ()) for r in runs}
    judges = {(r["summary"]["meta"].get("inputs") or {}).get("judge", {}).get("fingerprint") for r in runs}
    differ = [what for what, values in (("examples", examples), ("judges", judges)) if len(values) > 1]
    if not differ:
        return ""
    return (f" These runs were judged on different {' and by different '.join(differ)}: a gap between their lines is not "
            "the methods' alone. Paired comparisons on the same examples are made within a run (harness run --method a,b).")


def render(runs: list[dict]) -> str:
    many = len(runs) > 1
    labels = run_labels(runs)  # what sets each run apart from the others (leaderboards/settings.py)
    tasks = list(dict.fromkeys(r["summary"]["task"] for r in runs))
    levels = sorted({_level(r) for r in runs})
    level = "/".join(f"{v:.0%}" for v in levels)
    sections = []
    for task in tasks:
        task_runs = [r for r in runs if r["summary"]["task"] == task]
        figures = [revision_figure(task_runs, many)]
        for run in task_runs:
            h2h = head_to_head_figure(run, _among(labels[run["name"]], run, many))
            if h2h is not None:
                figures.append(h2h)
        text = (f"Win rate of each method's revision N against the task's references (ties count 1/2); the band is its {level} "
                f"interval ({_interval(task_runs[0], 'win_rate')}).")  # fmt: skip
        if len(figures) > 1:
            text += " Heatmaps: head-to-head win rate of the row method against the column method at the same revision."
        text += _unpaired_note(task_runs)
        sections.append(Section(title=f"{task}: win rate by revision", text=text, figures=figures))
    paired = paired_table(runs)
    if paired.rows:
        figures = [f for f in (paired_figure(r, _among(labels[r["name"]], r, many)) for r in runs) if f is not None]
        sections.append(Section(
            title="Paired comparisons on the same examples",
            text=(f"Difference of two win rates against the references, computed per example on the examples both were judged on, "
                  f"with its {level} interval ({_interval(runs[0], 'paired')}): an interval "
                  "that excludes 0 says the first beats the second on these examples. Read many at once, some exclude 0 by chance (5 in "
                  "100 at 95%): p (Holm), adjusted over the comparisons of its run, below 1 - level holds for the whole table at that "
                  "family-wise level (a red diamond in the plot). Beside it, the head-to-head win rate where the two were judged against "
                  "each other."),
            figures=figures, tables=[paired],
        ))  # fmt: skip
    colors = method_colors(runs)
    curves = [training_figure(r, {m: colors[(r["name"], m)] for m in _methods(r)}, _among(labels[r["name"]], r, many)) for r in runs]
    if any(curves):
        sections.append(Section(
            title="Training",
            text=(f"Each method's loss, margin (the chosen minus the rejected log-ratio, as its loss scales it) and accuracy (the share "
                  f"of a step's pairs with a positive margin) per optimizer step, from train/METHOD/metrics.jsonl; SRPO's revision terms "
                  f"dotted. Logs longer than {MAX_POINTS} steps are averaged over windows of steps."),
            figures=[f for f in curves if f is not None],
        ))  # fmt: skip
    judges = judges_section(runs, many)
    if judges is not None:
        sections.append(judges)
    text = "Length-controlled: the win rate at zero length difference (AlpacaEval 2's length control); words: mean completion length."
    short = [(r["name"], note) for r in runs if (note := r["summary"]["meta"].get("scoring", {}).get("paper_note"))]
    if short:  # each run says what it lacks: their item counts differ
        text += " * " + ("; ".join(f"{name}: {note}" for name, note in short) if many else short[0][1]) + "."
    few = [(r["name"], note) for r in runs if (note := r["summary"]["meta"].get("scoring", {}).get("few_note"))]
    if few:
        text += " Note: " + ("; ".join(f"{name}: {note}" for name, note in few) if many else few[0][1]) + "."
    sections.append(Section(title="All results", text=text, tables=[results_table(runs)]))
    proxies = {r["summary"]["task"]: r["summary"]["meta"].get("judge_note") for r in runs if r["summary"]["meta"].get("judge_is_proxy")}
    if len(set(proxies.values())) > 1:  # a task's note names the paper's judge for that task
        note = " ".join(f"{task}: {said}" for task, said in proxies.items())
    else:
        note = next(iter(proxies.values()), "")
    metadata = {r["name"]: {k: v for k, v in r["summary"]["meta"].items() if k not in ("example_ids",)} for r in runs}
    extra = {"browser": script_json([browser_data(r, labels[r["name"]]) for r in runs])}
    return render_page("Leaderboard: " + ", ".join(tasks), sections, note=note, metadata=metadata, extra=extra)
