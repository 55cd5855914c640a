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
import plotly.io as pio
from plotly.offline import get_plotlyjs

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Table:
    columns: list[str]
    rows: list[list]  # cells are formatted to text by the template's escape, never trusted as HTML
    caption: str = ""
    exports: bool = False  # CSV and Markdown download buttons under it
    id: str = ""  # the element id, for links and tests


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list = field(default_factory=list)  # plotly Figures
    tables: list[Table] = field(default_factory=list)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )


def render_page(title: str, sections: list[Section], note: str = "", metadata: dict | None = None, extra: dict | None = None) -> str:
    """``extra`` holds JSON blobs (already made safe for a script tag) for the page's own script:
    ``browser`` (the example browser's data), ``csv`` and ``markdown`` (the table's exports)."""
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
