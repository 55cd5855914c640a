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


def build_gold_pairs(resolved: ResolvedRun, store: RunStore, console: Console, base: str) -> list[dict]:
    """Gold-vs-policy pairs from test examples the run does not evaluate: the base model's
    0-revision summary is ``rejected``, the gold summary ``chosen`` (see harness/pairs.py)."""
    from harness.engine import SamplingParams, build_engine_for
    from harness.pairs import gold_vs_policy, save_pairs
    from harness.prompting import PromptFormatter

    task, n, start = resolved.task, resolved.build_pairs, resolved.limit
    if start is None:
        raise HarnessError("build_pairs needs --limit: the pairs come from the test examples after the evaluated ones")
    artifact = "data/pairs.jsonl"
    params = SamplingParams(max_new_tokens=resolved.sampling.max_new_tokens, seed=resolved.seed)
    key = {"task": resolved.config["task"], "options": dataclasses.asdict(task), "model": base, "n": n, "start": start,
           "engine": resolved.engine_name, "sampling": params.as_dict()}  # fmt: skip
    stage = store.stage("pairs", key)
    if not stage.done:
        examples = task.load("test", start + n).rows[start:]
        console.print(f"building {len(examples)} gold-vs-policy pairs from test examples {start + 1}..{start + len(examples)} (not evaluated)")
        engine = build_engine_for(resolved.engine_name, resolved.engine_options, base)
        formatter = PromptFormatter(task, engine.tokenizer(), resolved.train.prompt_format)
        outputs = engine.generate([formatter.prompt(ex) for ex in examples], params, None, task.stop)
        engine.close()
        pairs = gold_vs_policy(examples, {str(ex["id"]): g.text for ex, g in zip(examples, outputs)}, f"{base} revision 0")
        if is_main_process():
            save_pairs(store.path(artifact), pairs, {"builder": "gold_vs_policy", "task": resolved.config["task"], "model": base,
                                                     "examples": f"test split rows {start + 1}..{start + len(examples)}", "sampling": params.as_dict()})  # fmt: skip
            stage.finish([artifact])
    rows = [json.loads(line) for line in store.path(artifact).read_text(encoding="utf-8").splitlines()]
    if is_main_process():
        store.record_input("data/preference", {"source": "built", "origin": f"{artifact} (gold vs {base}, held-out test examples)", "rows": len(rows)})
    console.print(f"preference: {len(rows)} pairs built by the harness ({store.path(artifact)})", markup=False, highlight=False)
    return rows


def preference_rows(resolved: ResolvedRun, store: RunStore, console: Console, base: str) -> list[dict]:
    try:
        return load_split(store, resolved.train_task, "preference", resolved.train_limit, console).rows
    except HarnessError as exc:
        if not resolved.build_pairs:
            raise
        console.print(f"no preference data to load ({str(exc).split(':')[0]}); the harness builds pairs instead", markup=False, highlight=False)
    return build_gold_pairs(resolved, store, console, base)


def train_all(resolved: ResolvedRun, store: RunStore, console: Console) -> dict[str, TrainResult]:
    task = resolved.train_task
    if not isinstance(task, TextTask):
        raise HarnessError(f"task {task.registered_name!r} has no text data to train a language model on")
    model_name = resolved.config.get("model") or DEFAULT_MODEL
    base = resolve_model(model_name)
    console.print(f"model: {model_name}" + (f" ({base})" if base != model_name else ""), markup=False, highlight=False)
    if is_main_process():
        store.record_input("model", {"name": model_name, "path": base})
    if resolved.sft is not None:
        from harness.training.sft import SFT, sft_rows

        examples = load_split(store, task, "sft", resolved.train_limit, console).rows
        rows = sft_rows(examples)
        sft_config = dataclasses.replace(resolved.sft, merge_adapter=True)
        key = {"rows": stable_hash(rows), "train": dataclasses.asdict(sft_config), "model": base, "seed": resolved.seed}
        out = store.path("train", "sft")
        result = _trained(store, "sft", key, lambda: Trainer(SFT(), sft_config, task, base, out, resolved.seed).train(rows))
        base = str(out / "merged") if sft_config.lora else result.model_dir  # the SFT model is pi_ref, as in the paper
    rows = preference_rows(resolved, store, console, base)
    results = {}
    for name, method in resolved.methods.items():
        config = resolved.train_by_method[name]
        key = {"method": name, "options": dataclasses.asdict(method), "train": dataclasses.asdict(config),
               "rows": stable_hash(rows), "model": base, "seed": resolved.seed}  # fmt: skip
        out = store.path("train", name)
        results[name] = _trained(store, name, key, lambda m=method, c=config, o=out: Trainer(m, c, task, base, o, resolved.seed).train(rows))
        console.print(f"trained {name}: {results[name].steps} steps, final loss {results[name].final_loss:.4g}, adapter {results[name].model_dir}")
    return results
