"""The page of text runs: win rate against revisions (the paper's Fig. 3 and 5), head-to-head
matrices (Table 1), a sortable table with CSV and Markdown export, an example browser and the
runs' metadata.

Every model and judge text reaches the page as JSON data that the page's script puts into the DOM
with ``textContent``: a generation holding HTML or a script shows as text and never runs. The
example browser renders one example at a time from that data, so 1024 examples x 6 revisions x 5
methods stay responsive.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import plotly.graph_objects as go

from harness.stages.judge import current_judgments
from harness.store import read_jsonl
from harness.leaderboards.page import Section, Table, render_page

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
COLUMNS = ["method", "model", "training data", "judge", "revision", "win rate", "std", "CI", "n", "W/T/L", "failed", "run"]


def _label(run: dict, method: str, many_runs: bool) -> str:
    return f"{method} ({run['name']})" if many_runs else method


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def revision_figure(runs: list[dict], many: bool) -> go.Figure:
    """Win rate against the references per revision, mean +- bootstrap std as a band."""
    fig = go.Figure()
    i = 0
    for run in runs:
        by_method = defaultdict(list)
        for r in run["summary"]["results"]:
            if r["opponent"] == "reference" and r["win_rate"] is not None:
                by_method[r["method"]].append(r)
        for method, rows in by_method.items():
            rows.sort(key=lambda r: r["revision"])
            x = [r["revision"] for r in rows]
            y = [r["win_rate"] for r in rows]
            sd = [r["std"] for r in rows]
            color = PALETTE[i % len(PALETTE)]
            name = _label(run, method, many)
            fig.add_scatter(x=x + x[::-1], y=[a + b for a, b in zip(y, sd)] + [a - b for a, b in zip(y, sd)][::-1], fill="toself",
                            fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=name)  # fmt: skip
            fig.add_scatter(x=x, y=y, mode="lines+markers", name=name, line={"color": color}, legendgroup=name,
                            customdata=sd, hovertemplate=f"{name}<br>revision %{{x}}: %{{y:.3f}} ± %{{customdata:.3f}}<extra></extra>")  # fmt: skip
            i += 1
    fig.update_layout(height=420, xaxis_title="revision N", yaxis_title="win rate against the references",
                      xaxis={"dtick": 1}, yaxis={"range": [0, 1]}, legend_title="method")  # fmt: skip
    return fig


def head_to_head_figure(run: dict) -> go.Figure | None:
    """Row method's win rate against the column method, one heatmap per revision (Table 1)."""
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
    return fig


def table_rows(runs: list[dict]) -> list[list]:
    out = []
    for run in runs:
        meta = run["summary"]["meta"]
        judge = meta.get("judge", {})
        judge_label = f"{judge.get('judge', '?')}:{judge.get('model', '')}" + (" (proxy)" if meta.get("judge_is_proxy") else "")
        for r in run["summary"]["results"]:
            opponent = "" if r["opponent"] == "reference" else f" vs {r['opponent']}"
            if r["win_rate"] is None:
                stats = ["-", "-", "-"]
            else:
                stats = [f"{r['win_rate']:.3f}", f"{r['std']:.3f}", f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"]
            out.append([r["method"] + opponent, meta.get("model", ""), meta.get("training_data", ""), judge_label, r["revision"],
                        *stats, r["n"], f"{r['wins']}/{r['ties']}/{r['losses']}", r["failed"], run["name"]])  # fmt: skip
    return out


def to_csv(rows: list[list]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(rows: list[list]) -> str:
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def browser_data(run: dict) -> dict:
    """What the example browser shows, read from the run folder: sources, references, every
    method's revisions, and the verdicts against the reference with their rationales."""
    folder = Path(run["dir"])
    gens = read_jsonl(folder / "generations.jsonl")
    fingerprint = run["summary"]["meta"].get("inputs", {}).get("judge", {}).get("fingerprint")
    judgments = current_judgments(folder, fingerprint)
    examples = {}
    test = {e["id"]: e for e in read_jsonl(folder / "examples.jsonl")}
    for eid in run["summary"]["meta"].get("example_ids", []):
        ex = test.get(eid, {})
        examples[eid] = {"id": eid, "source": ex.get("source", ""), "reference": ex.get("reference", ""), "revisions": {}}
    for g in gens:
        e = examples.get(g["example_id"])
        if e is not None:
            e["revisions"].setdefault(g["method"], {})[str(g["revision"])] = {"text": g["text"]}
    for j in judgments:
        e = examples.get(j["example_id"])
        if e is None or j["opponent"] != "reference":
            continue
        slot = e["revisions"].get(j["method"], {}).get(str(j["revision"]))
        if slot is not None:
            slot["preference"] = j["preference"]
            slot["error"] = j.get("error", "")
            slot["rationales"] = [o.get("rationale") or o.get("error", "") for o in j.get("orders", [])]
    return {"run": run["name"], "examples": list(examples.values())}


def script_json(obj) -> str:
    """JSON safe inside <script type="application/json">: no "</" can close the tag early."""
    return json.dumps(obj, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def render(runs: list[dict]) -> str:
    many = len(runs) > 1
    tasks = list(dict.fromkeys(r["summary"]["task"] for r in runs))
    sections = []
    for task in tasks:
        task_runs = [r for r in runs if r["summary"]["task"] == task]
        figures = [revision_figure(task_runs, many)]
        for run in task_runs:
            h2h = head_to_head_figure(run)
            if h2h is not None:
                figures.append(h2h)
        text = "Win rate of each method's revision N against the task's references (ties count 1/2); the band is the bootstrap std."
        if len(figures) > 1:
            text += " Heatmaps: head-to-head win rate of the row method against the column method at the same revision."
        sections.append(Section(title=f"{task}: win rate against revisions", text=text, figures=figures))
    rows = table_rows(runs)
    sections.append(Section(title="All results", tables=[Table(COLUMNS, rows, caption="Click a column header to sort")]))
    proxies = [r["summary"]["meta"].get("judge_note") for r in runs if r["summary"]["meta"].get("judge_is_proxy")]
    note = proxies[0] if proxies else ""
    metadata = {r["name"]: {k: v for k, v in r["summary"]["meta"].items() if k not in ("example_ids",)} for r in runs}
    extra = {
        "browser": script_json([browser_data(r) for r in runs]),
        "csv": script_json(to_csv(rows)),
        "markdown": script_json(to_markdown(rows)),
    }
    return render_page("Leaderboard: " + ", ".join(tasks), sections, note=note, metadata=metadata, extra=extra)
