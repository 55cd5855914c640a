"""The training stage of a text run: optional SFT, then each method on the preference pairs.

Under ``accelerate launch`` every process runs this; only the main process writes stage records.
"""

from __future__ import annotations

import dataclasses
import json

from rich.console import Console

from harness.config import stable_hash
from harness.datasources import Loaded
from harness.distributed import is_main_process
from harness.errors import HarnessError
from harness.models import resolve_model
from harness.runconfig import DEFAULT_MODEL, ResolvedRun
from harness.store import RunStore
from harness.task import TextTask
from harness.training.trainer import Trainer, TrainResult


def load_split(store: RunStore, task: TextTask, split: str, limit: int | None, console: Console) -> Loaded:
    """Load a split, say where it came from on screen, and record that in the manifest."""
    loaded = task.load(split, limit)
    provenance = loaded.provenance()
    console.print(f"{split}: {provenance['rows']} rows from {provenance['source']} source {provenance['origin']}", markup=False, highlight=False)
    for note in provenance["notes"]:
        console.print(f"  note: {note}", markup=False, highlight=False)
    label = getattr(task, "dataset_label", None)
    if label:
        console.print(f"  dataset: {label}", markup=False)
        provenance["dataset"] = label
    if is_main_process():
        store.record_input(f"data/{split}", provenance)
    return loaded


def _trained(store: RunStore, name: str, key: dict, run) -> TrainResult:
    stage = store.stage(f"train/{name}", key)
    result_path = f"train/{name}/result.json"
    if not stage.done:
        result = run()
        if is_main_process():
            stage.finish([result_path])
        return result
    return TrainResult(**json.loads(store.path(result_path).read_text()))


def train_all(resolved: ResolvedRun, store: RunStore, console: Console) -> dict[str, TrainResult]:
    task = resolved.task
    if not isinstance(task, TextTask):
        raise HarnessError(f"task {resolved.config['task']!r} has no text data to train a language model on")
    model_name = resolved.config.get("model") or DEFAULT_MODEL
    base = resolve_model(model_name)
    if is_main_process():
        store.record_input("model", {"name": model_name, "path": base})
    if resolved.sft is not None:
        from harness.training.sft import SFT, sft_rows

        examples = load_split(store, task, "sft", resolved.limit, console).rows
        rows = sft_rows(examples)
        sft_config = dataclasses.replace(resolved.sft, lora=resolved.sft.lora, merge_adapter=True)
        key = {"rows": stable_hash(rows), "train": dataclasses.asdict(sft_config), "model": base, "seed": resolved.seed}
        out = store.path("train", "sft")
        result = _trained(store, "sft", key, lambda: Trainer(SFT(), sft_config, task, base, out, resolved.seed).train(rows))
        base = str(out / "merged") if sft_config.lora else result.model_dir  # the SFT model is pi_ref, as in the paper
    rows = load_split(store, task, "preference", resolved.limit, console).rows
    results = {}
    for name, method in resolved.methods.items():
        key = {"method": name, "options": dataclasses.asdict(method), "train": dataclasses.asdict(resolved.train),
               "rows": stable_hash(rows), "model": base, "seed": resolved.seed}  # fmt: skip
        out = store.path("train", name)
        results[name] = _trained(store, name, key, lambda m=method, o=out: Trainer(m, resolved.train, task, base, o, resolved.seed).train(rows))
        console.print(f"trained {name}: {results[name].steps} steps, final loss {results[name].final_loss:.4g}, adapter {results[name].model_dir}")
    return results
