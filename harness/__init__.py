"""An evaluation-first harness for preference optimization of language models.

Importing the package touches neither the network nor any heavy back end: engines, judges and
models are imported only when a run needs them.
"""

__version__ = "0.1.0"
