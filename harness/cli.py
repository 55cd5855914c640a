"""The ``harness`` command: run, list and the single stages.

Errors a user can cause (HarnessError) print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import registry
from harness.config import load_config_file, parse_assignments
from harness.errors import HarnessError


def _add_run_options(p, synthetic: bool = True) -> None:
    """The flags every stage command shares; each maps to one key of the run config."""
    p.add_argument("--task", help="task name (harness list tasks)")
    p.add_argument("--method", dest="methods", help="method name(s), comma-separated (harness list methods)")
    if synthetic:
        p.add_argument("--behavior", dest="behaviors", help="behaviour policies of a synthetic task, comma-separated")
    p.add_argument("--model", help="base model: hub id, local folder, or smollm2-135m (default, offline)")
    p.add_argument("--preset", help="named defaults: offline (default for text tasks) or paper (the paper's protocol)")
    p.add_argument("--limit", type=int, help="evaluate the first N test examples")
    p.add_argument("--build-pairs", type=int, help="with no preference split: build N gold-vs-policy pairs from held-out test examples")
    p.add_argument("--train-limit", type=int, help="train on at most N rows of the sft and preference splits")
    p.add_argument("--sft", action="store_true", default=None, help="run an SFT stage on the task's sft split first")
    p.add_argument("--config", help="YAML or JSON file with the same keys as these flags")
    p.add_argument("--task-arg", action="append", metavar="KEY=VALUE", help="task option (repeatable; VALUE is YAML)")
    p.add_argument("--train-task", help="train on this task's sft and preference splits (default: the evaluated task)")
    p.add_argument("--train-task-arg", action="append", metavar="KEY=VALUE", help="option of the training task (repeatable)")
    p.add_argument("--method-arg", action="append", metavar="[METHOD.]KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--train-arg", action="append", metavar="KEY=VALUE", help="trainer option (repeatable; see harness/training/config.py)")
    p.add_argument("--engine", help="generation engine: transformers (default), vllm or openai (harness list engines)")
    p.add_argument("--engine-arg", action="append", metavar="KEY=VALUE", help="engine option (repeatable)")
    p.add_argument("--revisions", type=int, help="generate revisions 0..N (default 2; the paper: 5)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0: greedy)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (default 1)")
    p.add_argument("--max-new-tokens", type=int, help="completion budget in tokens (default 64)")
    p.add_argument("--judge", help="judge: local-lm (offline proxy, default), openai, reward-model (harness list judges)")
    p.add_argument("--judge-arg", action="append", metavar="KEY=VALUE", help="judge option, e.g. model=gpt-4o or base_url=URL (repeatable)")
    p.add_argument("--no-head-to-head", dest="head_to_head", action="store_false", default=None, help="skip the method-vs-method judging")
    p.add_argument("--single-order", dest="both_orders", action="store_false", default=None, help="judge one seeded random order instead of both")
    p.add_argument("--bootstrap-arg", action="append", metavar="KEY=VALUE", help="n_items, resamples, sample_size or level (repeatable)")
    p.add_argument("--seed", type=int, help="seed for sampling, initialisation and bootstrap (default 0)")
    p.add_argument("--output-dir", help="run folder (default: runs/TASK-CONFIGHASH, reused by a rerun)")


def resolve_args(args):
    from harness import registry
    from harness.presets import preset_layer
    from harness.runconfig import merge, resolve

    file_config = load_config_file(args.config) if args.config else {}
    cli_config = {
        "preset": args.preset,
        "task": args.task,
        "methods": args.methods,
        "behaviors": getattr(args, "behaviors", None),
        "model": args.model,
        "limit": args.limit,
        "train_limit": args.train_limit,
        "build_pairs": args.build_pairs,
        "sft": args.sft,
        "seed": args.seed,
        "output_dir": args.output_dir,
        "task_args": parse_assignments(args.task_arg, "--task-arg") or None,
        "train_task": args.train_task,
        "train_task_args": parse_assignments(args.train_task_arg, "--train-task-arg") or None,
        "method_args": parse_assignments(args.method_arg, "--method-arg") or None,
        "train": parse_assignments(args.train_arg, "--train-arg") or None,
        "engine": args.engine,
        "engine_args": parse_assignments(args.engine_arg, "--engine-arg") or None,
        "revisions": args.revisions,
        "judge": args.judge,
        "judge_args": parse_assignments(args.judge_arg, "--judge-arg") or None,
        "head_to_head": args.head_to_head,
        "both_orders": args.both_orders,
        "bootstrap": parse_assignments(args.bootstrap_arg, "--bootstrap-arg") or None,
        "sampling": {k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p), ("max_new_tokens", args.max_new_tokens)) if v is not None} or None,
    }
    task_name = cli_config["task"] or file_config.get("task")
    kind = getattr(registry.tasks.get(task_name), "kind", None) if task_name else None
    preset = preset_layer(cli_config["preset"] or file_config.get("preset"), task_name, kind)
    return resolve(merge(preset, file_config, cli_config))  # every check happens before the run folder exists


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="train, revise, judge, score and render a leaderboard")
    _add_run_options(p)
    p.set_defaults(handler=cmd_run)


def cmd_run(args, console: Console) -> int:
    from harness.pipeline import run

    run(resolve_args(args), console)
    return 0


def _stage_parsers(sub) -> None:
    """One subcommand per stage of a text run; each takes every option of ``harness run``."""
    stages = {
        "train": ("the training stage alone: (SFT and) each method on the training task's pairs", cmd_train),
        "generate": ("the generation stage alone: revisions 0..N of every trained method", cmd_generate),
        "judge": ("the judging and scoring stages alone, on a run's generations", cmd_judge),
    }
    for name, (text, handler) in stages.items():
        p = sub.add_parser(name, help=text)
        _add_run_options(p, synthetic=False)
        p.set_defaults(handler=handler)


def cmd_train(args, console: Console) -> int:
    from harness.distributed import is_main_process
    from harness.stages.text import open_store
    from harness.stages.train import train_all

    resolved = resolve_args(args)
    if not is_main_process():  # under accelerate launch, one process speaks
        console = Console(quiet=True)
    train_all(resolved, open_store(resolved, console), console)
    return 0


def cmd_generate(args, console: Console) -> int:
    from harness.stages.text import generate_stage, open_store

    resolved = resolve_args(args)
    generate_stage(resolved, open_store(resolved, console), console)
    return 0


def cmd_judge(args, console: Console) -> int:
    from harness.stages.text import judge_and_score, open_store

    resolved = resolve_args(args)
    judge_and_score(resolved, open_store(resolved, console), console)
    return 0


def _score_parser(sub) -> None:
    p = sub.add_parser("score", help="rescore a run's judgments (e.g. other bootstrap settings) without judging again")
    p.add_argument("run_dir", help="a run folder holding judgments.jsonl")
    p.add_argument("--bootstrap-arg", action="append", metavar="KEY=VALUE", help="n_items, resamples, sample_size, level or seed")
    p.set_defaults(handler=cmd_score)


def cmd_score(args, console: Console) -> int:
    import dataclasses

    from harness.config import build_dataclass
    from harness.scoring import BootstrapConfig
    from harness.stages.judge import current_judgments
    from harness.stages.score import score_judgments
    from harness.stages.text import write_summary
    from harness.store import RunStore

    store = RunStore(Path(args.run_dir))
    summary = store.read_json("summary.json")
    if summary is None or not store.path("judgments.jsonl").exists():
        raise HarnessError(f"{args.run_dir!r} holds no judged run (summary.json and judgments.jsonl): run `harness run` or `harness judge` first")
    old = summary["meta"]["bootstrap"]
    config = build_dataclass(BootstrapConfig, {**old, **parse_assignments(args.bootstrap_arg, "--bootstrap-arg")}, "bootstrap")
    fingerprint = (store.read_json("manifest.json") or {}).get("inputs", {}).get("judge", {}).get("fingerprint")
    judgments = current_judgments(store.root, fingerprint)
    order = {eid: i for i, eid in enumerate(summary["meta"]["example_ids"])}
    summary["results"] = score_judgments(judgments, config, order)
    summary["meta"]["bootstrap"] = dataclasses.asdict(config)
    write_summary(store, summary, console)
    return 0


def _list_parser(sub) -> None:
    p = sub.add_parser("list", help="the methods, tasks, judges and engines this installation knows")
    p.add_argument("kind", nargs="?", choices=sorted(registry.REGISTRIES), help="only this kind")
    p.set_defaults(handler=cmd_list)


def cmd_list(args, console: Console) -> int:
    if not console.is_terminal:  # piped into grep or a file: don't wrap descriptions at 80 columns
        console = Console(width=220)
    kinds = [args.kind] if args.kind else list(registry.REGISTRIES)
    for kind in kinds:
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
    loaded = task.load(args.split, args.limit)
    print_provenance(console, f"{args.task}/{args.split}", loaded.provenance())
    for row in loaded.rows[: args.show]:
        console.rule(f"id {row.get('id')}")
        console.print(task.prompt(row), markup=False, highlight=False)
    return 0


def print_provenance(console: Console, what: str, provenance: dict) -> None:
    console.print(f"{what}: {provenance['rows']} rows from {provenance['source']} source {provenance['origin']}", markup=False, highlight=False)
    for note in provenance.get("notes", []):
        console.print(f"  note: {note}", markup=False, highlight=False)


def _leaderboard_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="one HTML page (plus CSV and Markdown tables) from any number of runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders holding summary.json")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/leaderboard.html for one run, leaderboard.html for several)")
    p.set_defaults(handler=cmd_leaderboard)


def cmd_leaderboard(args, console: Console) -> int:
    from harness.leaderboards.render import load_runs, write_pages

    runs = load_runs(args.run_dirs)
    out = Path(args.out) if args.out else (runs[0][1] / "leaderboard.html" if len(runs) == 1 else Path("leaderboard.html"))
    console.print(f"leaderboard: [bold]{write_pages(out, runs)}[/bold]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_run_parser, _stage_parsers, _score_parser, _list_parser, _data_parser, _leaderboard_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    console = Console(stderr=False)
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, console)
    except HarnessError as exc:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {exc}", highlight=False, markup=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: finished stages are kept; rerun the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
