"""Pick the page renderer that fits a summary's task kind."""

from __future__ import annotations


def render_summary(summary: dict) -> str:
    rows = summary.get("results") or []
    if rows and "policy" in rows[0]:
        from leaderboards import bandit

        return bandit.render(summary)
    raise ValueError(f"no leaderboard renderer for the rows of task {summary.get('task')!r}")
