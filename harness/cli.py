"""The ``harness`` command: run, list and the single stages.

Errors a user can cause (HarnessError) print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import registry
from harness.config import load_config_file, parse_assignments
from harness.errors import HarnessError


def _add_run_options(p, kinds: tuple[str, ...] = ("text", "synthetic")) -> None:
    """One flag per field of the run schema (harness/runconfig.py) that applies to ``kinds``;
    every flag defaults to None, so only what the user typed reaches the config."""
    from harness.runconfig import FIELDS

    for key, field in FIELDS.items():
        extra = field.json_schema_extra or {}
        if not set(extra["applies"]) & set(kinds):
            continue
        for sub, (flag, help) in extra.get("subflags", {}).items():
            p.add_argument(flag, dest=f"{key}.{sub}", metavar=sub.upper(), help=help)
        flag = extra.get("flag")
        if flag is None:
            continue
        if extra.get("action"):
            p.add_argument(flag, dest=key, action=extra["action"], default=None, help=extra["flag_help"])
        elif extra.get("assign"):
            p.add_argument(flag, dest=key, action="append", metavar=extra.get("metavar", "KEY=VALUE"), help=f"{field.description} (repeatable; VALUE is YAML)")
        else:
            p.add_argument(flag, dest=key, help=field.description)
    p.add_argument("--config", help="YAML or JSON file with the keys of these flags (see harness/runconfig.py)")


def cli_layer(args) -> dict:
    """The config layer of the flags the user typed."""
    from harness.runconfig import FIELDS

    layer: dict = {}
    for key, field in FIELDS.items():
        extra = field.json_schema_extra or {}
        for sub in extra.get("subflags", {}):
            value = getattr(args, f"{key}.{sub}", None)
            if value is not None:
                layer.setdefault(key, {})[sub] = value
        value = getattr(args, key, None)
        if value is not None:
            layer[key] = parse_assignments(value, extra["flag"]) if extra.get("assign") else value
    return layer


def resolve_args(args):
    from harness.config import deep_merge, nest_dotted
    from harness.presets import preset_layer
    from harness.runconfig import FIELDS, resolve

    file_config = load_config_file(args.config) if args.config else {}
    for key, field in FIELDS.items():  # dotted keys in a file mean what they mean in a flag
        if (field.json_schema_extra or {}).get("assign") and isinstance(file_config.get(key), dict):
            file_config[key] = nest_dotted(file_config[key], f"config file key {key!r}")
    flags = cli_layer(args)
    task_name = flags.get("task") or file_config.get("task")
    kind = getattr(registry.tasks.get(task_name), "kind", None) if isinstance(task_name, str) else None
    preset = preset_layer(flags.get("preset") or file_config.get("preset"), task_name, kind)
    return resolve(deep_merge(preset, file_config, flags))  # every check happens before the run folder exists


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="train, revise, judge, score and render a leaderboard")
    _add_run_options(p)
    p.add_argument("--dry-run", action="store_true",
                   help="check the options, model, engine, judge and data as a run does, print the run's config as YAML that --config takes back "
                        "(every option's resolved value, where each split comes from and how many judgments it asks, as comments) and its folder, "
                        "and stop: nothing is trained or written")  # fmt: skip
    p.set_defaults(handler=cmd_run)


def cmd_run(args, console: Console) -> int:
    from harness.pipeline import run

    resolved = resolve_args(args)
    if args.dry_run:
        return _dry_run(resolved)
    run(resolved, console)
    return 0


def _dry_run(resolved) -> int:
    """What ``harness run`` would run, before hours of GPU time: a YAML document (its other lines
    comments) that ``--config`` reads back into the same run. The config is printed first, so that
    a model, key or server out of reach, which ends the dry run as it would end the run, leaves it
    on screen."""
    import yaml

    from harness.task import TextTask

    comments = lambda obj: "\n".join("# " + line for line in yaml.safe_dump(obj, sort_keys=False).splitlines())  # noqa: E731
    folder = resolved.output_dir
    state = "holds a run: its finished stages are reused" if folder.is_dir() and any(folder.iterdir()) else "new"
    print(f"# harness run --dry-run: nothing was run. Run folder: {folder} ({state})")
    print("# the run's options (harness run --config FILE reads them back):")
    print(yaml.safe_dump({k: v for k, v in resolved.config.items() if not k.startswith("resolved_")}, sort_keys=False).rstrip())
    print("# every option of its methods, trainer and task, defaults filled in:")
    print(comments({k: v for k, v in resolved.config.items() if k.startswith("resolved_")}), flush=True)
    if isinstance(resolved.task, TextTask):
        from harness.engine import build_engine_for
        from harness.judge import build_judge
        from harness.stages.text import check_access

        sources = check_access(resolved)  # a model, key, server or data file out of reach says so now, as the run would
        engine = build_engine_for(resolved.engine_name, resolved.engine_options, resolved.model).describe_config()
        judge = build_judge(resolved.judge_name, resolved.judge_options).describe_config()
        print("# the engine and the judge as their results are keyed (precision settled), their model, keys and servers checked:")
        print(comments({"engine": engine, "judge": judge}))
        print("# the data, each split from the first source that answers (a file's first row checked):")
        print(comments({"data": sources}))
        print(f"# judging: {_judging_plan(resolved)}")
    return 0


def _judging_plan(resolved) -> str:
    """How much the judge will be asked, before an API judge's bill: the comparisons the judging
    stage plans (``harness.stages.judge.comparisons``) for one example and for the run's --limit."""
    import itertools

    from harness.stages.judge import comparisons

    methods, revisions = list(resolved.methods), range(resolved.revisions + 1)
    planned = comparisons(["x"], set(itertools.product(["x"], methods, revisions)), methods, resolved.head_to_head)
    against = len(methods) * len(revisions)
    orders = 2 if resolved.both_orders else 1
    what = (f"{len(planned)} comparisons an example ({len(methods)} method{'s' * (len(methods) > 1)} x revisions 0-{resolved.revisions} against the references"
            + (f", {len(planned) - against} head to head" if len(planned) > against else "") + f"), in {'both orders' if orders == 2 else 'one order'}")
    total = f"at most {len(planned) * orders * resolved.limit:,} judgments for {resolved.limit} examples (a comparison in one order each)" if resolved.limit else "for each test example"
    return (f"{what}: {total}; two identical texts are a tie without asking, and a verdict cached or judged in a run "
            "folder beside this one is not asked again")


def _stage_parsers(sub) -> None:
    """One subcommand per stage of a text run; each takes every option of ``harness run``."""
    stages = {
        "train": ("the training stage alone: (SFT and) each method on the training task's pairs", cmd_train),
        "generate": ("the generation stage alone: revisions 0..N of every trained method", cmd_generate),
        "judge": ("the judging and scoring stages alone, on a run's generations", cmd_judge),
    }
    for name, (text, handler) in stages.items():
        p = sub.add_parser(name, help=text)
        if name == "judge":
            p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                           help="a judged run folder: with --judge and --judge-arg, add that judge's verdicts beside the run's own (its diagnostics and agreement join the summary)")  # fmt: skip
        _add_run_options(p, kinds=("text",))
        p.set_defaults(handler=handler)


def cmd_train(args, console: Console) -> int:
    from harness.distributed import is_main_process
    from harness.stages.text import check_access, open_store
    from harness.stages.train import train_all

    resolved = resolve_args(args)
    builds_pairs = bool(resolved.build_pairs) and resolved.train_task.names_no_source("preference")
    check_access(resolved, engine=builds_pairs, judge=False, test_data=False)  # the engine only builds pairs, where the training task has none
    if not is_main_process():  # under accelerate launch, one process speaks
        console = Console(quiet=True)
    train_all(resolved, open_store(resolved, console), console)
    return 0


def cmd_generate(args, console: Console) -> int:
    from harness.stages.text import check_access, generate_stage, open_store

    resolved = resolve_args(args)
    check_access(resolved, judge=False, training_data=False)
    generate_stage(resolved, open_store(resolved, console), console)
    return 0


def cmd_judge(args, console: Console) -> int:
    from harness.stages.text import check_access, judge_and_score, open_store

    if args.run_dir is None:
        resolved = resolve_args(args)
        check_access(resolved, model=False, engine=False, training_data=False)
        judge_and_score(resolved, open_store(resolved, console), console)
        return 0
    from harness.runconfig import resolve
    from harness.runs import text_summary
    from harness.store import RunStore

    other = {k: v for k, v in cli_layer(args).items() if k not in ("judge", "judge_args")}
    if other or args.config:
        raise HarnessError(f"with a run folder, `harness judge` takes only --judge and --judge-arg (the run's own options come from its config.json); got {sorted(other) or ['--config']}")
    if args.judge_args and not args.judge:
        raise HarnessError("with a run folder, --judge-arg needs --judge NAME: the judge whose verdicts join the run's own, with those "
                           "options (the run's own judge keeps the options in its config.json)")  # fmt: skip
    text_summary(args.run_dir)  # a judged text run, or one clear message
    store = RunStore(Path(args.run_dir))
    config = {k: v for k, v in (store.read_json("config.json") or {}).items() if not k.startswith("resolved_")}
    resolved = resolve({**config, "output_dir": str(store.root)})
    store.lock()
    other_judge = (args.judge, parse_assignments(args.judge_args, "--judge-arg")) if args.judge else None
    judge_and_score(resolved, store, console, other_judge=other_judge)
    return 0


def _score_parser(sub) -> None:
    p = sub.add_parser("score", help="rescore a run's stored verdicts (other intervals, level, seed) and reprint every table; no judging")
    p.add_argument("run_dir", help="a run folder holding summary.json and judgments.jsonl")
    p.add_argument("--bootstrap-arg", action="append", metavar="KEY=VALUE", help="interval (score or bca), level, resamples, seed or the paper protocol's sizes (harness/scoring.py)")
    p.set_defaults(handler=cmd_score)


def cmd_score(args, console: Console) -> int:
    from harness.config import build_options
    from harness.runs import run_records
    from harness.scoring import BootstrapConfig
    from harness.stages.score import summarise, write_summary
    from harness.store import RunStore

    store = RunStore(Path(args.run_dir))
    if not store.path("judgments.jsonl").exists():
        run_records(args.run_dir)  # a folder that is no run at all says so first
        raise HarnessError(f"{args.run_dir!r} holds no verdicts (judgments.jsonl): score a text run after `harness run` or `harness judge`")
    summary, examples, generations, judges = run_records(args.run_dir)
    config = build_options(BootstrapConfig, {**summary["meta"].get("bootstrap", {}), **parse_assignments(args.bootstrap_arg, "--bootstrap-arg")}, "bootstrap")
    store.lock()
    if not any(j.primary for j in judges):
        raise HarnessError(f"{args.run_dir!r} records no judge in its manifest.json: rerun `harness judge` with the run's options")
    rescored = summarise(summary["task"], {k: v for k, v in summary["meta"].items() if k not in ("bootstrap", "scoring")}, judges, generations, examples, config)
    write_summary(store, rescored, console)
    return 0


def _list_parser(sub) -> None:
    p = sub.add_parser("list", help="the methods, tasks, judges and engines this installation knows, and the presets")
    p.add_argument("kind", nargs="?", choices=[*sorted(registry.REGISTRIES), "presets"], help="only this kind")
    p.set_defaults(handler=cmd_list)


def cmd_list(args, console: Console) -> int:
    kinds = [args.kind] if args.kind else [*registry.REGISTRIES, "presets"]
    for kind in kinds:
        if kind == "presets":
            _list_presets(console)
            continue
        table = Table(title=kind, show_lines=False, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("defaults")
        for name, obj in registry.REGISTRIES[kind].items():
            describe = getattr(obj, "describe", None)
            defaults = getattr(obj, "defaults", None)
            listing = getattr(obj, "listing", None)  # extra lines a plugin wants shown (sources, splits)
            text = describe() if describe else ""
            if listing:
                text += "\n" + listing()
            table.add_row(name, text, _format_defaults(defaults() if defaults else {}))
        console.print(table)
    return 0


def _list_presets(console: Console) -> None:
    from harness.presets import listing

    table = Table(title="presets (--preset NAME: a layer below --config and the flags, which override it)", title_justify="left")
    for column in ("name", "tasks", "description", "sets (--config keys)"):
        table.add_column(column, style="bold" if column == "name" else None)
    for row in listing():
        table.add_row(*row)
    console.print(table)


def _format_defaults(defaults: dict) -> str:
    parts = []
    for key, value in defaults.items():
        text = repr(value)
        parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
    return "\n".join(parts)


def _data_parser(sub) -> None:
    p = sub.add_parser("data", help="load a task's split and show where it came from and its first rows")
    p.add_argument("--task", required=True, help="task name (harness list tasks)")
    p.add_argument("--split", default="test", help="sft, preference or test (default test)")
    p.add_argument("--task-arg", action="append", metavar="KEY=VALUE", help="task option (repeatable)")
    p.add_argument("--limit", type=int, help="read at most this many rows")
    p.add_argument("--show", type=int, default=1, help="print this many prompts (default 1)")
    p.set_defaults(handler=cmd_data)


def cmd_data(args, console: Console) -> int:
    from harness.task import TextTask, build_task

    task = build_task(args.task, parse_assignments(args.task_arg, "--task-arg"))
    if not isinstance(task, TextTask):
        raise HarnessError(f"task {args.task!r} is synthetic: its data is sampled by `harness run`")
    if args.split not in task.splits():
        raise HarnessError(f"task {args.task!r} has no {args.split!r} split: pass --split {' or '.join(task.splits())}")
    loaded = task.load(args.split, args.limit)
    loaded.report(console, f"{args.task}/{args.split}")
    for row in loaded.rows[: args.show]:
        console.rule(f"id {row.get('id')}")
        console.print(task.prompt(row))
    return 0


def _leaderboard_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="one HTML page (plus CSV and Markdown tables) from any number of runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders holding summary.json")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/leaderboard.html for one run, leaderboard.html for several)")
    p.set_defaults(handler=cmd_leaderboard)


def cmd_leaderboard(args, console: Console) -> int:
    from harness.leaderboards.render import load_runs, write_pages

    named = {}  # a folder named twice (a glob and a path, a trailing slash) would show every row twice
    for folder in args.run_dirs:
        named.setdefault(Path(folder).resolve(), folder)
    if len(named) < len(args.run_dirs):
        console.print(f"note: {len(args.run_dirs) - len(named)} run folder(s) named more than once; each is shown once")
    folders = list(named.values())
    unfinished = [f for f in folders if not (Path(f) / "summary.json").is_file()]
    if len(unfinished) < len(folders):  # `runs/*` while a run is still going: the page of the finished ones
        folders = [f for f in folders if f not in unfinished]
        for folder in unfinished:
            console.print(f"note: {folder} holds no summary.json (a run not finished, or no run): left out")
    runs = load_runs(folders)
    out = Path(args.out) if args.out else (runs[0][1] / "leaderboard.html" if len(runs) == 1 else Path("leaderboard.html"))
    console.print(f"leaderboard: {write_pages(out, runs)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_run_parser, _stage_parsers, _score_parser, _list_parser, _data_parser, _leaderboard_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Plain text: paths, names and data a user typed are printed as they are, never read as markup.
    # Piped into a file or grep, tables keep room for their columns instead of wrapping at 80.
    console = Console(stderr=False, markup=False, highlight=False, width=None if sys.stdout.isatty() else 160)
    # peft reads transformers' deprecated `is_gradient_checkpointing` alias whenever it wraps a model:
    # a warning about one library's use of another, in the middle of every training, that no user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, console)
    except HarnessError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is kept; rerun the same command to resume\n")
        return 130
    except Exception as exc:  # a full disk (checkpoints and full fine-tunes of 7B models take tens of GB) is the user's to fix
        said = _disk_full(exc)
        if said is None:
            raise
        sys.stdout.flush()
        sys.stderr.write(f"error: {said}: free some space (or pass another --output-dir) and rerun the same command; finished work is kept\n")
        return 2


def _disk_full(exc: Exception) -> str | None:
    """What a write that found the disk full or the quota spent says, or None for any other error.
    The Rust libraries that save tokenizers and weights (tokenizers, safetensors) raise a plain
    exception ending "(os error 28)", SQLite (the judges' cache) "database or disk is full"."""
    codes = (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, OSError):
        return exc.strerror + (f" writing {exc.filename}" if exc.filename else "") if exc.errno in codes else None
    said = str(exc)
    return said if any(f"(os error {code})" in said for code in codes) or said == "database or disk is full" else None


if __name__ == "__main__":
    sys.exit(main())
