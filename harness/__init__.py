"""An evaluation-first harness for preference optimization of language models.

Importing the package touches neither the network nor any heavy back end: engines, judges and
models are imported only when a run needs them.
"""

__version__ = "0.1.0"

_API = {"load_run": "harness.runs", "score_verdicts": "harness.stages.score", "check_method": "harness.method"}


def __getattr__(name: str):
    """The notebook API (``harness.load_run``, ``harness.score_verdicts``, ``harness.check_method``),
    imported on first use so that ``import harness`` stays light."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
