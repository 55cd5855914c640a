"""A run's training on its page: each method's loss, margin and accuracy per optimizer step, read
from the log the trainer appends as it goes (``train/METHOD/metrics.jsonl``). A win rate that did
not move is read differently when the loss did not move either."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.errors import HarnessError
from harness.store import read_jsonl

# (metric, panel title): what every preference method logs (harness.method), SRPO's revision
# terms drawn dashed beside its 0-revision ones
PANELS = (("loss", "loss"), ("margin", "margin: chosen minus rejected (each method's scale)"),
          ("accuracy", "accuracy: pairs with a positive margin"))  # fmt: skip
MAX_POINTS = 500  # steps drawn per line; longer logs are averaged over windows of steps


def training_figure(run: dict, colors: dict[str, str], label: str = "") -> go.Figure | None:
    """Loss, margin and accuracy per step of each method of ``colors`` (method -> its line's colour),
    from the run folder; None where no method left a log (a summary moved without its folder)."""
    logs = {m: frame for m in colors if (frame := _metrics(Path(run["dir"]) / "train" / m / "metrics.jsonl")) is not None}
    if not logs:
        return None
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[title for _, title in PANELS], horizontal_spacing=0.07)
    named = set()  # each line in the legend once, from the first panel that draws it
    for method, frame in logs.items():
        for col, (metric, _) in enumerate(PANELS, start=1):
            for key, dash, name in ((metric, "solid", method), (f"revision_{metric}", "dot", f"{method} (revision)")):
                if key in frame:
                    fig.add_scatter(x=frame["step"], y=frame[key], mode="lines+markers" if len(frame) < 30 else "lines", name=name,
                                    legendgroup=name, showlegend=name not in named, line={"color": colors[method], "dash": dash}, row=1, col=col,
                                    hovertemplate=f"{name}<br>step %{{x}}: %{{y:.4g}}<extra></extra>")  # fmt: skip
                    named.add(name)
    losses = pd.concat([frame["loss"] for frame in logs.values() if "loss" in frame])
    if len(losses) and (losses > 0).all():  # IPO's squared loss is in the thousands where DPO's is below 1: a log axis shows both
        fig.update_yaxes(type="log", row=1, col=1)
    steps = max(frame["step"].max() for frame in logs.values())
    fig.update_xaxes(title_text="optimizer step", **({"dtick": 1} if steps <= 10 else {}))
    fig.update_annotations(font_size=12)  # the panels' titles
    fig.update_layout(height=380, title=f"training: {label}" if label else None, margin={"t": 90 if label else 50},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0})  # below the panels: labels of runs are long
    return fig


def _metrics(path: Path) -> pd.DataFrame | None:
    """The log's rows by step, averaged over windows of steps down to ``MAX_POINTS`` rows (the
    window's last step names it); None where there is none or it cannot be read."""
    try:
        rows = read_jsonl(path) if path.is_file() else []
    except HarnessError:  # a log edited by hand: the page is drawn without it
        return None
    frame = pd.DataFrame(rows)
    if frame.empty or "step" not in frame:
        return None
    frame = frame.select_dtypes("number").sort_values("step")
    window = -(-len(frame) // MAX_POINTS)
    if window > 1:
        frame = frame.groupby(pd.RangeIndex(len(frame)) // window).agg({**{c: "mean" for c in frame.columns}, "step": "last"})
    return frame
