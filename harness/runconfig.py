"""A run's config: one dict from defaults, an optional file and CLI flags, checked before any write.

Precedence, lowest first: plugin defaults < the task's protocol (``method_defaults``) < preset <
config file < command line. ``resolve`` builds every plugin from the merged dict, so a bad name or
option fails here, before a run folder exists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness import registry
from harness.config import build_dataclass, stable_hash
from harness.engine import SamplingParams, build_engine
from harness.errors import HarnessError
from harness.judge import build_judge
from harness.method import Method, build_method
from harness.scoring import BootstrapConfig
from harness.task import Task, build_task
from harness.training.config import TrainConfig

# Sec. 6's SFT recipe, scaled to what a run asks for: cosine, 3% warm-up, weight decay 0.1, peak 2e-5.
SFT_DEFAULTS = {"lr": 2e-5, "warmup_ratio": 0.03, "weight_decay": 0.1, "schedule": "cosine"}

RUN_KEYS = {
    "task": "task name",
    "methods": "method names",
    "task_args": "task options",
    "train_task_args": "options of the training task",
    "method_args": "method options: KEY for every method that has it, METHOD.KEY for one",
    "behaviors": "behaviour policies to run (synthetic tasks)",
    "seed": "seeds data sampling, initialisation and bootstrap",
    "output_dir": "run folder",
    "model": "base model: a hub id, a local folder, or smollm2-135m (offline)",
    "train": "trainer options (harness/training/config.py); METHOD: {...} overrides them for one method",
    "train_task": "task whose sft and preference splits train the model (default: the evaluated task)",
    "build_pairs": "when the training task has no preference split: build this many gold-vs-policy pairs from held-out test examples",
    "preset": "named defaults below the config file and flags: offline (the default) or paper",
    "sft": "true, or trainer options, to run an SFT stage on the task's sft split first",
    "limit": "evaluate the first N test examples",
    "train_limit": "train on at most N rows of the sft and preference splits",
    "engine": "generation engine name (harness list engines)",
    "engine_args": "generation engine options",
    "revisions": "generate revisions 0..N",
    "sampling": "temperature, top_p, max_new_tokens (seeded by seed)",
    "judge": "judge name (harness list judges); text tasks default to the offline local-lm proxy",
    "judge_args": "judge options",
    "head_to_head": "also judge every pair of methods at each revision (default: when there are two or more)",
    "both_orders": "judge each pair in both orders and average (default true); false: one seeded random order",
    "bootstrap": "n_items, resamples, sample_size, level (the paper: 1024, 20, 512)",
}
DEFAULT_TEXT_JUDGE = "local-lm"
DEFAULT_MODEL = "smollm2-135m"
MERGED_BY_KEY = ("task_args", "train_task_args", "method_args", "train", "engine_args", "sampling", "judge_args", "bootstrap", "sft")


@dataclass
class ResolvedRun:
    config: dict  # the merged config, as snapshotted in the run folder
    task: Task
    methods: dict[str, Method]
    output_dir: Path
    seed: int
    train: TrainConfig  # the options shared by every method
    train_by_method: dict[str, TrainConfig]  # each method's options, with its overrides applied
    train_task: Task  # where training data comes from (the paper: TL;DR, evaluated on XSum)
    build_pairs: int
    sft: TrainConfig | None  # None: no SFT stage
    limit: int | None  # test examples
    train_limit: int | None  # rows of the training splits
    engine_name: str
    engine_options: dict
    revisions: int
    sampling: SamplingParams
    judge_name: str
    judge_options: dict
    head_to_head: bool
    both_orders: bool
    bootstrap: BootstrapConfig


def merge(*layers: dict) -> dict:
    """Later layers win; ``task_args`` and ``method_args`` merge key by key."""
    out: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in RUN_KEYS:
                raise HarnessError(f"unknown config key {key!r} (known: {', '.join(RUN_KEYS)})")
            if key in MERGED_BY_KEY and isinstance(value, dict):
                earlier = out.get(key)
                out[key] = {**(earlier if isinstance(earlier, dict) else {}), **value}
            else:
                out[key] = value
    return out


def _as_list(value, what: str) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        raise HarnessError(f"{what} must be a comma-separated string or a list, got {value!r}")
    items = [v for v in items if v]
    if not items:
        raise HarnessError(f"no {what} given")
    if len(set(items)) != len(items):
        raise HarnessError(f"{what} lists a name twice: {items}")
    return items


def method_options(names: list[str], task: Task, method_args: dict) -> dict[str, dict]:
    """Split ``method_args`` into each method's options over the task's protocol defaults."""
    classes = {name: registry.methods.get(name) for name in names}
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in classes.items()}
    options = {name: {k: v for k, v in task.method_defaults.items() if k in fields[name]} for name in names}
    known_methods = registry.methods.names()
    for key, value in method_args.items():
        method, dot, option = key.partition(".")
        if isinstance(value, dict) or dot:  # {srpo: {alpha: 0.5}} or srpo.alpha=0.5: one method's option
            target = key if isinstance(value, dict) else method
            if target not in known_methods:
                registry.methods.get(target)  # fails with the known names and the closest match
            if target in classes:  # a registered method outside this run: its options wait for a run that has it
                options[target].update(value if isinstance(value, dict) else {option: value})
            continue
        takers = [n for n in names if key in fields[n]]
        if not takers:
            known = sorted(set().union(*fields.values()))
            raise HarnessError(f"no method in this run has option {key!r} (options: {', '.join(known)})")
        for name in takers:
            options[name][key] = value
    return options


def resolve(config: dict) -> ResolvedRun:
    if "task" not in config:
        raise HarnessError("no task given: pass --task NAME (see `harness list tasks`)")
    if "methods" not in config:
        raise HarnessError("no method given: pass --method NAME[,NAME...] (see `harness list methods`)")
    config = dict(config)
    config["methods"] = _as_list(config["methods"], "methods")
    if "behaviors" in config:
        config["behaviors"] = _as_list(config["behaviors"], "behaviours")
    seed = config.setdefault("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise HarnessError(f"seed must be an integer, got {seed!r}")
    task = build_task(config["task"], config.get("task_args"))
    per_method = method_options(config["methods"], task, config.get("method_args", {}))
    methods = {name: build_method(name, per_method[name]) for name in config["methods"]}
    if config.get("output_dir"):
        output_dir = Path(config["output_dir"])
    else:  # same config -> same folder, so a rerun resumes instead of starting over
        output_dir = Path("runs") / f"{config['task']}-{stable_hash({k: v for k, v in config.items() if k != 'output_dir'})[:10]}"
    if output_dir.exists() and not output_dir.is_dir():
        raise HarnessError(f"output dir {str(output_dir)!r} exists and is not a folder")
    train_options = dict(config.get("train") or {})
    # {dpo: {lr: 1e-6}} overrides the trainer for one method; a registered method outside this run is skipped
    overrides = {name: train_options.pop(name) for name in list(train_options) if isinstance(train_options[name], dict) and name in registry.methods.names()}
    train = build_dataclass(TrainConfig, train_options, "train")
    train_by_method = {name: build_dataclass(TrainConfig, {**train_options, **overrides.get(name, {})}, f"train ({name})") for name in methods}
    train_task = build_task(config["train_task"], config.get("train_task_args")) if config.get("train_task") else task
    build_pairs = config.get("build_pairs", 0)
    if isinstance(build_pairs, bool) or not isinstance(build_pairs, int) or build_pairs < 0:
        raise HarnessError(f"build_pairs must be a non-negative integer, got {build_pairs!r}")
    sft = config.get("sft")
    if sft in (None, False):
        sft_config = None
    elif sft is True or isinstance(sft, dict):
        sft_config = build_dataclass(TrainConfig, {**SFT_DEFAULTS, **(sft if isinstance(sft, dict) else {})}, "sft")
    else:
        raise HarnessError(f"sft must be true, false or a mapping of trainer options, got {sft!r}")
    limit, train_limit = config.get("limit"), config.get("train_limit")
    for flag, value in (("limit", limit), ("train_limit", train_limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise HarnessError(f"{flag} must be a positive integer, got {value!r}")
    engine_name = config.get("engine") or "transformers"
    engine_options = dict(config.get("engine_args") or {})  # the model comes from training: build_engine_for
    build_engine(engine_name, engine_options)  # checks names and options; loads nothing
    revisions = config.get("revisions", 2)
    if isinstance(revisions, bool) or not isinstance(revisions, int) or revisions < 0:
        raise HarnessError(f"revisions must be a non-negative integer, got {revisions!r}")
    sampling = build_dataclass(SamplingParams, {"seed": seed, **(config.get("sampling") or {})}, "sampling")
    judge_name = config.get("judge") or (DEFAULT_TEXT_JUDGE if task.kind == "text" else "oracle")
    judge_options = dict(config.get("judge_args") or {})
    if task.kind == "text":
        build_judge(judge_name, judge_options)  # checks names and options; loads nothing
    head_to_head = config.get("head_to_head", len(methods) > 1)
    both_orders = config.get("both_orders", True)
    for flag, value in (("head_to_head", head_to_head), ("both_orders", both_orders)):
        if not isinstance(value, bool):
            raise HarnessError(f"{flag} must be true or false, got {value!r}")
    bootstrap = build_dataclass(BootstrapConfig, {"seed": seed, **(config.get("bootstrap") or {})}, "bootstrap")
    config["resolved_method_args"] = {n: dataclasses.asdict(m) for n, m in methods.items()}
    config["resolved_task_args"] = dataclasses.asdict(task)
    config["resolved_train"] = {name: dataclasses.asdict(t) for name, t in train_by_method.items()}
    return ResolvedRun(config, task, methods, output_dir, seed, train, train_by_method, train_task, build_pairs, sft_config, limit, train_limit,
                       engine_name, engine_options, revisions, sampling, judge_name, judge_options, head_to_head, both_orders, bootstrap)  # fmt: skip
