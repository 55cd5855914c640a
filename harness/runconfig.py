"""A run's config: one schema from which the flags, the config-file keys and every check come.

``RunConfig`` is the single source of truth: each field carries its help text, its flag and the
task kinds it applies to. The command line's flags are generated from it (``harness/cli.py``), a
config file is validated by it, and the presets are layers of the same keys. Layers merge deeply,
lowest first: plugin defaults < the task's protocol (``method_defaults``) < preset < config file <
command line. ``resolve`` then builds every plugin from the merged config, so a bad name, option
or value fails here, before a run folder exists.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness import registry
from harness.config import NonNegativeInt, PositiveInt, build_options, describe_validation_error, stable_hash
from harness.engine import SamplingParams, build_engine
from harness.errors import HarnessError
from harness.judge import build_judge
from harness.method import Method, build_method, check_method
from harness.models import resolve_model
from harness.scoring import BootstrapConfig
from harness.task import Task, build_task
from harness.training.config import TrainConfig

TEXT, SYNTHETIC = "text", "synthetic"
BOTH = (TEXT, SYNTHETIC)
DEFAULT_TEXT_JUDGE = "local-lm"
DEFAULT_MODEL = "smollm2-135m"
# Sec. 6's SFT recipe, scaled to what a run asks for: cosine, 3% warm-up, weight decay 0.1, peak 2e-5.
SFT_DEFAULTS = {"lr": 2e-5, "warmup_ratio": 0.03, "weight_decay": 0.1, "schedule": "cosine"}


def option(default: Any, help: str, flag: str | None = None, applies: tuple[str, ...] = BOTH, **cli: Any):
    """A schema field: its help text, its flag (``None``: config files only), the task kinds it
    applies to, and how the flag reads (``action`` with its own ``flag_help``, ``assign`` for
    repeatable KEY=VALUE, ``subflags`` for flags that set one key of a mapping)."""
    return Field(default, description=help, json_schema_extra={"flag": flag, "applies": list(applies), **cli})


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str | None = option(None, "task name (harness list tasks)", "--task")
    methods: list[str] | None = option(None, "method name(s), comma-separated (harness list methods)", "--method")
    behaviors: list[str] | None = option(None, "behaviour policies of a synthetic task, comma-separated (default: all of the task's)", "--behavior", (SYNTHETIC,))
    preset: str | None = option(None, "named defaults below the config file and flags: offline (default for text tasks) or paper (the paper's protocol)", "--preset")
    model: str = option(DEFAULT_MODEL, "base model: a hub id, a local folder, or smollm2-135m (the offline default)", "--model", (TEXT,))
    limit: PositiveInt | None = option(None, "evaluate the first N test examples", "--limit", (TEXT,))
    build_pairs: NonNegativeInt = option(0, "when the training task has no preference split: build N gold-vs-policy pairs from held-out test examples", "--build-pairs", (TEXT,))
    train_limit: PositiveInt | None = option(None, "train on at most N rows of the sft and preference splits", "--train-limit", (TEXT,))
    sft: bool | dict = option(False, "true, or trainer options, to run an SFT stage first, on the sft split of the SFT task (sft_task) or else the training task", "--sft", (TEXT,), action="store_true", flag_help="run an SFT stage first, on the sft split of --sft-task or else the training task (SFT options: the config key sft)")
    task_args: dict = option({}, "task options (harness list tasks)", "--task-arg", assign=True)
    train_task: str | None = option(None, "task whose sft and preference splits train the model (default: the evaluated task)", "--train-task", (TEXT,))
    train_task_args: dict = option({}, "options of the training task", "--train-task-arg", (TEXT,), assign=True)
    sft_task: str | None = option(None, "task whose sft split the SFT stage trains on, which naming it turns on (default: the training task; the paper's Arena-Hard protocol: sharegpt)", "--sft-task", (TEXT,))
    sft_task_args: dict | None = option(None, "options of the SFT task", "--sft-task-arg", (TEXT,), assign=True)  # None, not {}: a run's folder is named by the options given
    method_args: dict = option({}, "method options: KEY for every method that has it, METHOD.KEY for one", "--method-arg", assign=True, metavar="[METHOD.]KEY=VALUE")
    train: dict = option({}, "trainer options (harness/training/config.py); METHOD.KEY for one method", "--train-arg", (TEXT,), assign=True, metavar="[METHOD.]KEY=VALUE")
    engine: str = option("transformers", "generation engine: transformers, vllm or openai (harness list engines)", "--engine", (TEXT,))
    engine_args: dict = option({}, "generation engine options", "--engine-arg", (TEXT,), assign=True)
    revisions: NonNegativeInt = option(2, "generate revisions 0..N (the paper: 5)", "--revisions", (TEXT,))
    sampling: dict = option({}, "temperature, top_p and max_new_tokens (seeded by seed)", None, (TEXT,), subflags={
        "temperature": ("--temperature", "sampling temperature (default 0: greedy)"),
        "top_p": ("--top-p", "nucleus sampling mass (default 1)"),
        "max_new_tokens": ("--max-new-tokens", "completion budget in tokens (default 64)"),
    })  # fmt: skip
    judge: str | None = option(None, "judge: local-lm (offline proxy, the default), openai, reward-model (harness list judges)", "--judge", (TEXT,))
    judge_args: dict = option({}, "judge options, e.g. model=gpt-4o or base_url=URL", "--judge-arg", (TEXT,), assign=True)
    head_to_head: bool | None = option(None, "also judge every pair of methods at each revision (default: when there are two or more)", "--no-head-to-head", (TEXT,), action="store_false", flag_help="skip the method-vs-method judging")
    both_orders: bool = option(True, "judge each pair in both orders and average; false: one seeded random order per item", "--single-order", (TEXT,), action="store_false", flag_help="judge one seeded random order per item instead of both")
    bootstrap: dict = option({}, "scoring options: interval (score or bca), level, resamples, the paper's protocol (harness/scoring.py)", "--bootstrap-arg", (TEXT,), assign=True)
    seed: NonNegativeInt = option(0, "seeds data sampling, initialisation, generation, judging order and bootstrap", "--seed")
    output_dir: str | None = option(None, "run folder (default: runs/TASK-CONFIGHASH, the same folder for the same config)", "--output-dir")

    @field_validator("methods", "behaviors", mode="before")
    @classmethod
    def _names(cls, value):
        if value is None:
            return None
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value]
        else:
            raise ValueError(f"must be a comma-separated string or a list of names, got {value!r}")
        items = [v for v in items if v]
        if not items:
            raise ValueError("lists no name")
        if len(set(items)) != len(items):
            raise ValueError(f"lists a name twice: {items}")
        return items


FIELDS = RunConfig.model_fields


def flag_of(key: str) -> str | None:
    return (FIELDS[key].json_schema_extra or {}).get("flag")


def validate(raw: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        flags = {k: f for k in FIELDS if (f := flag_of(k))}
        raise HarnessError(describe_validation_error(exc, "config", sorted(FIELDS), flags)) from None


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
    sft_task: Task  # where the SFT stage's data comes from (the paper's Arena-Hard protocol: ShareGPT); the training task unless named
    build_pairs: int
    sft: TrainConfig | None  # None: no SFT stage
    limit: int | None  # test examples
    train_limit: int | None  # rows of the training splits
    model: str  # the base model's name as given (an alias, a folder or a hub id)
    engine_name: str
    engine_options: dict  # what every engine of the run is built with: the user's options, "auto" precision settled; keys hold Engine.describe_config
    revisions: int
    sampling: SamplingParams
    judge_name: str
    judge_options: dict
    head_to_head: bool
    both_orders: bool
    bootstrap: BootstrapConfig
    behaviors: list[str] | None = None  # synthetic tasks: the behaviour policies to run


def method_options(names: list[str], task: Task, method_args: dict) -> dict[str, dict]:
    """Split ``method_args`` into each method's options over the task's protocol defaults:
    ``{KEY: V}`` for every method of the run that has KEY, ``{METHOD: {KEY: V}}`` for one."""
    classes = {name: registry.methods.get(name) for name in names}
    fields = {name: {f.name for f in dataclasses.fields(cls) if f.init} for name, cls in classes.items()}
    options = {name: {k: v for k, v in task.method_defaults.items() if k in fields[name]} for name in names}
    for key, value in method_args.items():
        if isinstance(value, dict):  # one method's options
            registry.methods.get(key)  # an unknown name fails with the known names and the closest match
            if key in classes:  # a registered method outside this run: its options wait for a run that has it
                options[key].update(value)
            continue
        takers = [n for n in names if key in fields[n]]
        if not takers:
            known = sorted(set().union(*fields.values()))
            raise HarnessError(f"no method in this run has option {key!r} (options: {', '.join(known)})")
        for name in takers:
            options[name][key] = value
    return options


def sweep(name: str, options: dict) -> dict[str, dict]:
    """A method's option given several values (``alpha=0,0.25,0.5`` or a YAML list) runs once per
    value, as its own row: ``{"srpo[alpha=0.25]": {..., "alpha": 0.25}, ...}``; otherwise ``{name: options}``."""
    import itertools

    types = typing.get_type_hints(registry.methods.get(name))  # Annotated[...] unwrapped
    swept = {}
    for key, value in options.items():
        scalar = types.get(key) in (float, int, bool, str)
        if scalar and isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",")]
        if scalar and isinstance(value, list):
            swept[key] = value
    if not swept:
        return {name: options}
    variants = {}
    for values in itertools.product(*swept.values()):
        chosen = dict(zip(swept, values))
        variants[f"{name}[{','.join(f'{k}={v}' for k, v in chosen.items())}]"] = {**options, **chosen}
    return variants


def _trainer_options(train: dict, methods: dict[str, Method]) -> tuple[TrainConfig, dict[str, TrainConfig]]:
    """The shared trainer options and each method's, where ``{METHOD: {...}}`` overrides them
    (a swept method's variants share its overrides), settled for this machine."""
    shared = {k: v for k, v in train.items() if not (isinstance(v, dict) and k in registry.methods.names())}
    config = build_options(TrainConfig, shared, "train").settled()
    by_method = {}
    for label, method in methods.items():
        override = train.get(method.registered_name) or {}
        by_method[label] = build_options(TrainConfig, {**shared, **override}, f"train ({method.registered_name})").settled() if override else config
    return config, by_method


def _refuse_inapplicable(config: RunConfig, kind: str, task_name: str) -> None:
    for key in sorted(config.model_fields_set):
        extra = FIELDS[key].json_schema_extra or {}
        if kind not in extra.get("applies", BOTH) and getattr(config, key) != FIELDS[key].default:
            flag = f" ({extra['flag']})" if extra.get("flag") else ""
            what = "a synthetic task: it has no model, generations or judge to configure" if kind == SYNTHETIC else "a text task"
            raise HarnessError(f"option {key!r}{flag} does not apply to task {task_name!r}, {what}; remove it")


def resolve(raw: dict) -> ResolvedRun:
    config = validate(raw)
    if not config.task:
        raise HarnessError("no task given: pass --task NAME (see `harness list tasks`)")
    if not config.methods:
        raise HarnessError("no method given: pass --method NAME[,NAME...] (see `harness list methods`)")
    task = build_task(config.task, config.task_args)
    _refuse_inapplicable(config, task.kind, config.task)
    per_method = method_options(config.methods, task, config.method_args)
    methods = {label: build_method(name, options) for name in config.methods for label, options in sweep(name, per_method[name]).items()}
    for method in methods.values():
        check_method(method)
    dumped = config.model_dump(exclude_none=True)
    if config.output_dir:
        output_dir = Path(config.output_dir)
    else:  # same config -> same folder, so a rerun resumes instead of starting over
        output_dir = Path("runs") / f"{config.task}-{stable_hash({k: v for k, v in dumped.items() if k != 'output_dir'})[:10]}"
    train, train_by_method = _trainer_options(config.train, methods)
    for named, flag in (("train_task", "--train-task"), ("sft_task", "--sft-task")):  # options of a task the run does not name would be dropped
        if getattr(config, f"{named}_args") and not getattr(config, named):
            raise HarnessError(f"option '{named}_args' ({flag}-arg) sets options of {flag}, which is not given: the evaluated task's "
                               "options are task_args (--task-arg), which also serve training and SFT when no other task is named")  # fmt: skip
    train_task = build_task(config.train_task, config.train_task_args) if config.train_task else task
    sft_task = build_task(config.sft_task, config.sft_task_args or {}) if config.sft_task else train_task
    if config.sft is False and not config.sft_task:
        sft = None
    else:
        own = config.sft if isinstance(config.sft, dict) else {}
        sft = build_options(TrainConfig, {**SFT_DEFAULTS, "bf16": train.bf16, **own}, "sft").settled()  # the run's precision unless set
    if sft and "sft" not in sft_task.splits():
        raise HarnessError(f"task {sft_task.registered_name!r} has no sft split to run the SFT stage on (it has {', '.join(sft_task.splits())}): "
                           "name a task that has one with --sft-task (e.g. sharegpt, ultrafeedback, tldr)")  # fmt: skip
    trainings = {**({"sft": sft} if sft else {}), **train_by_method}
    if len({t.bf16 for t in trainings.values()}) > 1:  # accelerate keeps one mixed precision per process
        each = ", ".join(f"{name}: {t.bf16}" for name, t in trainings.items())
        raise HarnessError(f"train option 'bf16' must be the same for every training of a run ({each}): set it once with --train-arg bf16=...")
    if task.kind == TEXT:
        resolve_model(config.model, convert=False)  # a missing folder fails here, not after work was done
    engine = build_engine(config.engine, config.engine_args)  # checks names and options; loads nothing
    sampling = build_options(SamplingParams, {"seed": config.seed, **config.sampling}, "sampling")
    engine.check_sampling(sampling)
    judge_name = config.judge or (DEFAULT_TEXT_JUDGE if task.kind == TEXT else "oracle")
    if task.kind == TEXT:
        build_judge(judge_name, config.judge_args)  # checks names and options; loads nothing
    if task.kind == SYNTHETIC and config.behaviors:
        unknown = [b for b in config.behaviors if b not in task.behaviors]
        if unknown:
            raise HarnessError(f"unknown behaviour {unknown[0]!r} (this task's behaviours: {', '.join(task.behaviors)}; add one with --task-arg behaviors=...)")
    protocol = {"paper_n_items": task.paper_items} if task.kind == TEXT else {}  # the paper's item count for this task
    bootstrap = build_options(BootstrapConfig, {"seed": config.seed, **protocol, **config.bootstrap}, "bootstrap")
    snapshot = {**dumped, "resolved_method_args": {n: dataclasses.asdict(m) for n, m in methods.items()},
                "resolved_task_args": dataclasses.asdict(task), "resolved_train": {n: dataclasses.asdict(t) for n, t in train_by_method.items()}}  # fmt: skip
    return ResolvedRun(
        config=snapshot, task=task, methods=methods, output_dir=output_dir, seed=config.seed, train=train,
        train_by_method=train_by_method, train_task=train_task, sft_task=sft_task, build_pairs=config.build_pairs, sft=sft, limit=config.limit,
        train_limit=config.train_limit, model=config.model, engine_name=config.engine, engine_options={**config.engine_args, **engine.settled_options()},
        revisions=config.revisions, sampling=sampling, judge_name=judge_name, judge_options=dict(config.judge_args),
        head_to_head=len(methods) > 1 if config.head_to_head is None else config.head_to_head, both_orders=config.both_orders,
        bootstrap=bootstrap, behaviors=config.behaviors,
    )  # fmt: skip
