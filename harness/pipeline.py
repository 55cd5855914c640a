"""``harness run``: dispatch a resolved config to the pipeline of its task's kind."""

from __future__ import annotations

from rich.console import Console

from harness.errors import HarnessError
from harness.runconfig import ResolvedRun
from harness.store import RunStore


def run(resolved: ResolvedRun, console: Console) -> RunStore:
    if resolved.task.kind == "synthetic":
        from harness.stages.synthetic import run_synthetic

        return run_synthetic(resolved, console)
    if resolved.task.kind == "text":
        from harness.stages.text import run_text

        return run_text(resolved, console)
    raise HarnessError(f"task {resolved.task.registered_name!r} is a {resolved.task.kind} task, which `harness run` cannot run")
