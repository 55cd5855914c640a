"""The stages of a text run, as ``harness run`` chains them and the stage commands run them alone:
train -> generate revisions -> judge -> score -> leaderboard."""

from __future__ import annotations

import json

from rich.console import Console

from harness.distributed import is_main_process
from harness.engine import Engine, build_engine
from harness.errors import HarnessError
from harness.prompting import PromptFormatter
from harness.runconfig import ResolvedRun
from harness.stages.generate import Candidate, generate_revisions
from harness.stages.train import load_split
from harness.store import RunStore
from harness.task import TextTask


def open_store(resolved: ResolvedRun, console: Console) -> RunStore:
    if not isinstance(resolved.task, TextTask):
        raise HarnessError(f"task {resolved.config['task']!r} is not a text task")
    store = RunStore.open(resolved.output_dir, resolved.config, resolved.seed)
    console.print(f"run folder: [bold]{store.root}[/bold]")
    return store


def candidates(resolved: ResolvedRun, store: RunStore) -> list[Candidate]:
    """Each method's trained model, as the training stage left it in the run folder."""
    out = []
    for name in resolved.methods:
        path = store.path("train", name, "result.json")
        if not path.exists():
            raise HarnessError(f"method {name!r} is not trained in {store.root}: run `harness train` (or `harness run`) with the same options first")
        result = json.loads(path.read_text())
        if resolved.train.lora:
            out.append(Candidate(name, result["base_model"], result["model_dir"]))
        else:
            out.append(Candidate(name, result["model_dir"], None))
    return out


def generate_stage(resolved: ResolvedRun, store: RunStore, console: Console) -> list[dict]:
    examples = load_split(store, resolved.task, "test", resolved.limit, console).rows
    cands = candidates(resolved, store)
    engines: dict[str, Engine] = {}

    def engine_for(candidate: Candidate) -> Engine:
        if candidate.model not in engines:
            options = dict(resolved.engine_options)
            if "model" in build_engine(resolved.engine_name, {}).defaults():
                options["model"] = candidate.model
            engines[candidate.model] = build_engine(resolved.engine_name, options)
        return engines[candidate.model]

    tokenizer = engine_for(cands[0]).tokenizer()  # every candidate shares the base tokenizer
    formatter = PromptFormatter(resolved.task, tokenizer, resolved.train.prompt_format)
    label = {"name": resolved.engine_name, **{k: v for k, v in resolved.engine_options.items() if k != "model"}}
    try:
        rows = generate_revisions(store, formatter, engine_for, label, examples, cands, resolved.revisions, resolved.sampling)
    finally:
        for engine in engines.values():
            engine.close()
    if is_main_process():
        store.record_input("generation", {"engine": label, "sampling": resolved.sampling.as_dict(), "revisions": resolved.revisions,
                                          "examples": len(examples), "rows": len(rows)})  # fmt: skip
    console.print(f"generations: {store.path('generations.jsonl')} ({len(rows)} completions)")
    return rows
