"""Pick the page renderer that fits the runs' task kind."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import HarnessError


def render_summary(summary: dict, run_dirs: list[Path] | None = None) -> str:
    """The page of one run (``summary`` may come from ``run_dirs[0]``)."""
    rows = summary.get("results") or []
    if rows and "policy" in rows[0]:
        from leaderboards import bandit

        return bandit.render(summary)
    return render_runs([(summary, Path(run_dirs[0]) if run_dirs else Path("."))])


def render_runs(runs: list[tuple[dict, Path]]) -> str:
    """One page from any number of text runs, grouped by task."""
    from leaderboards import lm

    names = [d.name or str(d) for _, d in runs]
    unique = [n if names.count(n) == 1 else str(d) for n, (_, d) in zip(names, runs)]
    return lm.render([{"summary": s, "dir": str(d), "name": n} for (s, d), n in zip(runs, unique)])


def load_runs(run_dirs: list[str]) -> list[tuple[dict, Path]]:
    runs = []
    for d in run_dirs:
        path = Path(d) / "summary.json"
        if not path.is_file():
            raise HarnessError(f"{str(path)!r} does not exist: is {d!r} a finished run folder?")
        runs.append((json.loads(path.read_text(encoding="utf-8")), Path(d)))
    return runs
