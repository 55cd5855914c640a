"""One self-contained HTML page: plotly's JS inlined once, every text escaped by Jinja2.

A page is a title, a note, and sections; a section holds plotly figures and tables. The page makes
no network request when opened from ``file://``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import markupsafe
import plotly.io as pio
from plotly.offline import get_plotlyjs

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Table:
    columns: list[str]
    rows: list[list]  # cells are formatted to text by the template's escape, never trusted as HTML
    caption: str = ""
    export: str | None = None  # None, or the suffix of its CSV and Markdown files' name after the page's (download buttons under it)
    id: str = ""  # the element id, for links and tests

    def to_csv(self) -> str:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(self.columns)
        writer.writerows([[_inert(cell) for cell in row] for row in self.rows])
        return buf.getvalue()

    def to_markdown(self) -> str:
        cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def _inert(cell):
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a
    leading apostrophe (OWASP's advice); numbers stay numbers."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(cell)
        except ValueError:
            return "'" + cell
    return cell


def script_json(obj) -> str:
    """JSON safe inside <script type="application/json">: every "<" is written as the JSON escape
    \\u003c, so no text ("</script>", "<!--") can end or alter the tag, and the data stays valid JSON."""
    return json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c")


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list = field(default_factory=list)  # plotly Figures
    tables: list[Table] = field(default_factory=list)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["script_json"] = lambda obj: markupsafe.Markup(script_json(obj))
    return environment


def render_page(title: str, sections: list[Section], note: str = "", metadata: dict | None = None, extra: dict | None = None) -> str:
    """``extra`` holds JSON blobs (already made safe for a script tag) for the page's own script:
    ``browser`` (the example browser's data)."""
    rendered = [
        {
            "title": s.title,
            "text": s.text,
            # full_html=False and include_plotlyjs=False: one <div> per figure, the JS is inlined once below.
            "figures": [pio.to_html(f, full_html=False, include_plotlyjs=False, config={"responsive": True}) for f in s.figures],
            "tables": s.tables,
        }
        for s in sections
    ]
    return _environment().get_template("page.html").render(
        title=title,
        note=note,
        sections=rendered,
        metadata=json.dumps(metadata or {}, indent=2, sort_keys=True, default=str),
        plotly_js=get_plotlyjs(),
        extra=extra or {},
    )
