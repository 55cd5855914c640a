"""An evaluation-first harness for preference optimization of language models.

Importing the package touches neither the network nor any heavy back end: engines, judges and
models are imported only when a run needs them.
"""

from pathlib import Path

__version__ = "0.1.0"


def _plugin_folders_of_a_checkout() -> None:
    """Installed, ``harness.methods`` and its siblings are inside this package (pyproject.toml maps
    the top-level plugin folders there). Run from a source checkout that was not installed
    (``PYTHONPATH=CHECKOUT python -m harness.cli``, as on a lent GPU machine), they sit beside it:
    then the checkout's root joins this package's path, for them."""
    package = Path(__file__).resolve().parent
    root = package.parent
    if not (package / "methods").is_dir() and (root / "methods" / "__init__.py").is_file() and (root / "pyproject.toml").is_file():
        __path__.append(str(root))  # type: ignore[name-defined]  # noqa: F821


_plugin_folders_of_a_checkout()

_API = {"load_run": "harness.runs", "score_verdicts": "harness.stages.score", "check_method": "harness.method"}


def __getattr__(name: str):
    """The notebook API (``harness.load_run``, ``harness.score_verdicts``, ``harness.check_method``),
    imported on first use so that ``import harness`` stays light."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
