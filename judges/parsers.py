"""Named verdict parsers: a judge's config names one, so a new answer format is one function here."""

from __future__ import annotations

import re
from typing import Callable

PREFERRED = re.compile(r"preferred\s*:\s*[\*\"'`\[\(]*\s*(?:summary\s+|response\s+)?([AB])\b", re.IGNORECASE)


def preferred_line(text: str) -> tuple[float, str] | None:
    """The last "Preferred: A|B" wins (a judge may quote the format before answering);
    the rationale is everything before it. None when no verdict is found."""
    matches = list(PREFERRED.finditer(text or ""))
    if not matches:
        return None
    last = matches[-1]
    return (1.0 if last.group(1).upper() == "A" else 0.0), text[: last.start()].strip()


PARSERS: dict[str, Callable[[str], tuple[float, str] | None]] = {"preferred_line": preferred_line}
