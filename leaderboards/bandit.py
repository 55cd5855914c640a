"""The bandit's page: learned action probabilities per method under each behaviour policy (Fig. 2)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.leaderboards.page import Section, Table, render_page


def action_probabilities_figure(rows: list[dict]) -> go.Figure:
    behaviors = list(dict.fromkeys(r["behavior"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    n_arms = len(rows[0]["policy"])
    fig = make_subplots(rows=1, cols=len(behaviors), shared_yaxes=True, subplot_titles=[f"behaviour: {b}" for b in behaviors])
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for col, behavior in enumerate(behaviors, start=1):
        for i, method in enumerate(methods):
            row = next((r for r in rows if r["behavior"] == behavior and r["method"] == method), None)
            if row is None:
                continue
            fig.add_bar(
                x=[f"y{k}" for k in range(n_arms)], y=row["policy"], name=method.upper(),
                marker_color=palette[i % len(palette)], legendgroup=method, showlegend=col == 1, offsetgroup=method,
                hovertemplate=f"{method} under {behavior}<br>%{{x}}: %{{y:.3f}}<extra></extra>", row=1, col=col,
            )  # fmt: skip
            if row.get("optimum"):  # where the loss says it should end: a marker on the bar
                fig.add_scatter(
                    x=[f"y{k}" for k in range(n_arms)], y=row["optimum"], mode="markers", marker={"symbol": "line-ew-open", "size": 18, "color": "black"},
                    name="optimum pi*", legendgroup="optimum", showlegend=col == 1 and i == 0, offsetgroup=method,
                    hovertemplate=f"optimum of {method} under {behavior}<br>%{{x}}: %{{y:.3f}}<extra></extra>", row=1, col=col,
                )  # fmt: skip
    fig.update_layout(barmode="group", scattermode="group", height=420, yaxis_title="learned probability pi(y)", legend_title="method")
    return fig


def render(summary: dict) -> str:
    rows = summary["results"]
    n_arms = len(rows[0]["policy"])
    table = Table(
        columns=["method", "behaviour", *[f"pi(y{k})" for k in range(n_arms)], "most probable arm", "win rate vs uniform (exact)",
                 *[f"pi*(y{k})" for k in range(n_arms)], "L1 to optimum", "optimum from"],
        rows=[
            [r["method"], r["behavior"], *[f"{p:.3f}" for p in r["policy"]], f"y{r['best_arm']}", f"{r['win_rate']:.3f}",
             *([f"{p:.3f}" for p in r["optimum"]] if r.get("optimum") else ["-"] * n_arms),
             f"{r['l1_to_optimum']:.4f}" if r.get("l1_to_optimum") is not None else "-", r.get("optimum_from", "")]
            for r in rows
        ],
        caption="Learned 0-revision policies beside the optimum of each method's own expected loss under the behaviour policy",
        id="policies",
    )  # fmt: skip
    section = Section(
        title="Learned action probabilities (the paper's Fig. 2)",
        text=(
            "Each method trains a tabular policy on pairs sampled from the behaviour policy and labelled by P. "
            "The win rate is the oracle's exact probability that a sample of the policy beats a sample of the "
            "uniform reference policy (ties count 1/2). pi* is where each method's loss says the policy should end "
            "under that behaviour policy (harness/policies/optima.py): closed form for IPO and for SRPO with 0 < alpha < 1, the "
            "numerical minimiser of the expected loss for DPO and the others. With alpha = 0 (the paper's Sec. 5 setting) SRPO's "
            "Eq. 16 alone leaves pi(y) free: any pi reaches the minimum with a matching improvement policy, so its learned pi "
            "comes from the optimiser's start (it still lands near y2); an alpha sweep (--method-arg alpha=0,0.25,0.5) shows "
            "the learned pi reaching the optimum once alpha > 0."
        ),
        figures=[action_probabilities_figure(rows)],
        tables=[table],
    )
    return render_page(f"Leaderboard: {summary['task']}", [section], metadata=summary.get("meta", {}))
