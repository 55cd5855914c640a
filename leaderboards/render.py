"""Write the page that fits the runs' task kind: the bandit's, or the text runs' with its tables as CSV and Markdown."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError


def _named(runs: list[tuple[dict, Path]]) -> list[dict]:
    """Runs as the text page wants them, each named by its folder (its path where names clash)."""
    names = [d.name or str(d) for _, d in runs]
    unique = [n if names.count(n) == 1 else str(d) for n, (_, d) in zip(names, runs)]
    return [{"summary": s, "dir": str(d), "name": n} for (s, d), n in zip(runs, unique)]


def write_pages(out: Path, runs: list[tuple[dict, Path]]) -> Path:
    """The page of ``runs`` at ``out`` and, for text runs, its tables as ``.csv`` and ``.md`` beside it: the
    results under the page's name (``board.csv``), the paired differences as ``board-paired.csv``."""
    from harness.runs import is_synthetic
    from harness.store import atomic_write_text

    synthetic = next(((summary, folder) for summary, folder in runs if is_synthetic(summary)), None)
    if synthetic is not None:  # a bandit run has its own page
        summary, folder = synthetic
        if len(runs) > 1:
            raise HarnessError(f"{folder} is a bandit run; build its page alone (harness leaderboard {folder})")
        from harness.leaderboards import bandit

        atomic_write_text(out, bandit.render(summary))
        return out
    from harness.leaderboards import lm

    named = _named(runs)
    atomic_write_text(out, lm.render(named))  # one page from any number of text runs, grouped by task
    for table in lm.exported_tables(named):
        for suffix, export in ((".csv", table.to_csv), (".md", table.to_markdown)):
            path = out.with_name(f"{out.stem}{table.export}{suffix}")
            if table.rows:
                atomic_write_text(path, export())
            else:  # an earlier page's file of that name would pass for this page's
                path.unlink(missing_ok=True)
    return out


def load_runs(run_dirs: list[str]) -> list[tuple[dict, Path]]:
    from harness.runs import read_summary

    return [(read_summary(d), Path(d)) for d in run_dirs]
