"""What a task is. Two kinds share the registry:

- ``synthetic``: tabular problems with a known preference matrix (the paper's Sec. 5 bandit). The
  harness trains a tabular policy with the same method losses and an oracle scores it exactly.
- ``text``: language tasks with splits, 0-revision and N-revision prompts and references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness import registry
from harness.plugin import Plugin


@dataclass
class Task(Plugin):
    kind: ClassVar[str]  # "synthetic" or "text"
    # Method options this task's protocol sets unless the user does (e.g. the bandit's beta = 1).
    method_defaults: ClassVar[dict[str, object]] = {}


def build_task(name: str, options: dict | None = None) -> Task:
    from harness.config import build_dataclass

    return build_dataclass(registry.tasks.get(name), options or {}, what=f"task {name!r}")


register = registry.tasks.register
