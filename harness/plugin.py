"""What every plugin class shares: options as dataclass fields and a one-line description."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from harness.config import Options, code_version_key


class Plugin(Options):
    registered_name: ClassVar[str]  # set by the registry's decorator: the one place a name is written
    # Raised by hand with any change to the plugin's code that alters what it computes from the
    # same options (a completion, a verdict, a loss): every key of its results holds it, so results
    # stored before the change are redone. Keys leave out 0, so those made before it existed hold.
    code_version: ClassVar[int] = 0

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Each option and its default, as ``harness list`` shows them."""
        out = {}
        for f in dataclasses.fields(cls):
            if not f.init:  # internal state (a judge's stats), not an option
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out

    def options_but(self, left_out: frozenset[str]) -> dict[str, object]:
        """Each option and its value on this instance, but those ``left_out``: what identifies the
        instance's results (a judge's verdicts, an engine's completions) in their cache keys, with
        its ``code_version``."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name not in left_out}
        return {**code_version_key(self), **options}
