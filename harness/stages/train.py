"""The training stage of a text run: optional SFT, then each method on the preference pairs.

Each unit of work (built pairs, SFT, one method) reads one frozen inputs object and is keyed by the
hash of that object alone, so a changed task option, prompt format, model or row retrains and
nothing else does. Under ``accelerate launch`` every process runs this; only the main process
writes stage records.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from rich.console import Console

from harness.datasources import Loaded, NoSourceError, Rows
from harness.distributed import is_main_process, single_process
from harness.engine import SamplingParams
from harness.errors import HarnessError
from harness.models import ModelRef, model_ref, resolve_model
from harness.runconfig import ResolvedRun
from harness.store import RunStore, Stage
from harness.task import TextTask
from harness.training.trainer import Trainer, TrainInputs, TrainResult, saved_model

PAIRS = "data/pairs.jsonl"


def load_split(store: RunStore, task: TextTask, split: str, limit: int | None, console: Console) -> Loaded:
    """Load a split, say where it came from on screen, and record that in the manifest."""
    loaded = task.load(split, limit)
    if limit is not None and len(loaded.rows) < limit:  # a run of fewer examples than asked says so where it says how many
        loaded.notes.append(f"{'--limit' if split == 'test' else '--train-limit'} {limit} asks for more rows than the split holds: all {len(loaded.rows)} are used")
    loaded.report(console, split)
    provenance = loaded.provenance()
    label = getattr(task, "dataset_label", None)
    if label:
        console.print(f"  dataset: {label}")
        provenance["dataset"] = label
    if is_main_process():
        store.record_input(f"data/{split}", provenance)
    return loaded


def _done_or_copied(stage: Stage, paths: list[str], what: str, console: Console) -> bool:
    """Whether ``stage`` is done here, or is now, copied from a run folder beside this one that
    finished it on the same inputs (``Stage.copy_from_neighbour``); a multi-process launch redoes it."""
    if stage.done or not single_process():
        return stage.done
    there = stage.copy_from_neighbour(paths)
    if there is not None:
        named = f" (as {there.name.rpartition('/')[2]})" if there.name != stage.name else ""
        console.print(f"{what}: done on the same inputs in {there.store.root}{named}; copied, not redone")
    return there is not None


def _trained(store: RunStore, name: str, inputs: TrainInputs, console: Console) -> TrainResult:
    stage = store.stage(f"train/{name}", inputs)
    result_path = f"train/{name}/result.json"
    if not _done_or_copied(stage, [f"train/{name}"], f"training {name}", console):
        if is_main_process():
            stage.begin()
        result = Trainer(inputs, store.path("train", name)).train()
        if is_main_process():
            stage.finish([result_path])
        return result
    saved = TrainResult(**json.loads(store.path(result_path).read_text()))
    here = store.path("train", name)  # the run folder may have moved since it was saved
    return dataclasses.replace(saved, output_dir=str(here), model_dir=str(saved_model(here, inputs.config)), base_model=inputs.model.path)


def policy_base(resolved: ResolvedRun, store: RunStore) -> ModelRef:
    """What every method starts from and is compared with: the SFT model when the run has an SFT
    stage (pi_ref, as in the paper), else the run's model."""
    if resolved.sft is not None:
        return model_ref(str(saved_model(store.path("train", "sft"), resolved.sft, merged=True)))
    return model_ref(resolve_model(resolved.model))


@dataclass(frozen=True)
class PairsInputs:
    """What building gold-vs-policy pairs reads: held-out examples, the model writing the
    rejected side, and how it is prompted and sampled."""

    task: TextTask
    examples: Rows  # test examples after the evaluated ones
    model: ModelRef
    engine: dict  # the engine's describe_config()
    prompt_format: str
    sampling: SamplingParams


def build_gold_pairs(resolved: ResolvedRun, store: RunStore, console: Console, base: ModelRef) -> list[dict]:
    """Gold-vs-policy pairs from test examples the run does not evaluate: the base model's
    0-revision summary is ``rejected``, the gold summary ``chosen`` (see harness/pairs.py)."""
    from harness.engine import build_engine_for
    from harness.pairs import gold_vs_policy, save_pairs

    task, n, start = resolved.task, resolved.build_pairs, resolved.limit
    if start is None:
        raise HarnessError("build_pairs needs --limit: the pairs come from the test examples after the evaluated ones")
    test = task.load("test", start + n).rows
    examples = test[start:]
    if not examples:
        raise HarnessError(f"--build-pairs {n}: the test split of task {task.registered_name!r} holds {len(test)} examples and --limit "
                           f"{start} evaluates them all, which leaves none to build pairs from: lower --limit")  # fmt: skip
    engine = build_engine_for(resolved.engine_name, resolved.engine_options, base.path)  # loads nothing until it generates
    inputs = PairsInputs(task, Rows.of(examples), base, engine.describe_config(), resolved.train.prompt_format,
                         SamplingParams(max_new_tokens=resolved.sampling.max_new_tokens, seed=resolved.seed))  # fmt: skip
    stage = store.stage("pairs", inputs)
    if not _done_or_copied(stage, [PAIRS], "building pairs", console):
        if is_main_process():
            stage.begin()
        short = f" ({n} asked; the test split ends at {len(test)})" if len(examples) < n else ""
        console.print(f"building {len(examples)} gold-vs-policy pairs{short} from test examples {start + 1}..{len(test)} (not evaluated)")
        formatter = engine.prompt_formatter(task, inputs.prompt_format)
        outputs = engine.generate([formatter.prompt(ex) for ex in examples], inputs.sampling, None, task.stop, chat=formatter.use_chat)
        engine.close()
        pairs = gold_vs_policy(examples, {str(ex["id"]): g.text for ex, g in zip(examples, outputs)}, f"{base.path} revision 0")
        if is_main_process():
            save_pairs(store.path(PAIRS), pairs, {"builder": "gold_vs_policy", "task": task.registered_name, "model": base.path,
                                                  "examples": f"test split rows {start + 1}..{start + len(examples)}", "sampling": inputs.sampling.as_dict()})  # fmt: skip
            stage.finish([PAIRS])
    rows = store.log(PAIRS).read()
    if is_main_process():
        store.record_input("data/preference", {"source": "built", "origin": f"{PAIRS} (gold vs {base.path}, held-out test examples)", "rows": len(rows)})
    console.print(f"preference: {len(rows)} pairs built by the harness ({store.path(PAIRS)})")
    return rows


def preference_rows(resolved: ResolvedRun, store: RunStore, console: Console, base: ModelRef) -> list[dict]:
    """The training task's preference split; only when it has no source at all or no such split
    (Arena-Hard's prompts alone; not when a given file is bad) and ``build_pairs`` is set, pairs the
    harness builds."""
    try:
        return load_split(store, resolved.train_task, "preference", resolved.train_limit, console).rows
    except NoSourceError as exc:
        if not resolved.build_pairs:
            raise no_pairs(exc) from None
        console.print(f"no preference data to load ({str(exc).split(':')[0]}); the harness builds pairs instead")
    return build_gold_pairs(resolved, store, console, base)


def no_pairs(exc: NoSourceError) -> NoSourceError:
    """The training task's missing preference split, with the two other ways to get pairs."""
    return NoSourceError(f"{exc}; or train on another task's pairs (--train-task) or on pairs the harness builds from "
                         "held-out test examples (--build-pairs N)")  # fmt: skip


def train_all(resolved: ResolvedRun, store: RunStore, console: Console) -> dict[str, TrainResult]:
    task = resolved.train_task
    if not isinstance(task, TextTask):
        raise HarnessError(f"task {task.registered_name!r} has no text data to train a language model on")
    path = resolve_model(resolved.model)
    console.print(f"model: {resolved.model}" + (f" ({path})" if path != resolved.model else ""))
    base = model_ref(path)
    if is_main_process():
        store.record_input("model", {"name": resolved.model, "path": path})
    if resolved.sft is not None:
        from harness.training.sft import SFT, sft_rows

        examples = load_split(store, resolved.sft_task, "sft", resolved.train_limit, console).rows
        sft_config = dataclasses.replace(resolved.sft, merge_adapter=True)
        _trained(store, "sft", TrainInputs(SFT(), sft_config, resolved.sft_task, base, Rows.of(sft_rows(examples)), resolved.seed), console)
        base = policy_base(resolved, store)
    rows = Rows.of(preference_rows(resolved, store, console, base))
    results = {}
    for name, method in resolved.methods.items():
        results[name] = _trained(store, name, TrainInputs(method, resolved.train_by_method[name], task, base, rows, resolved.seed), console)
        console.print(f"trained {name}: {results[name].steps} steps, final loss {results[name].final_loss:.4g}, adapter {results[name].model_dir}")
    return results
