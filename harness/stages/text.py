"""The stages of a text run, as ``harness run`` chains them and the stage commands run them alone:
train -> generate revisions -> judge -> score -> leaderboard."""

from __future__ import annotations

from rich.console import Console

from harness.datasources import NoSourceError
from harness.distributed import is_main_process
from harness.engine import build_engine_for
from harness.errors import HarnessError
from harness.models import check_kind, model_ref, resolve_model
from harness.presets import paper_judge_flags
from harness.runconfig import ResolvedRun
from harness.stages.generate import GENERATIONS, Candidate, OneModelAtATime, generate_revisions
from harness.stages.train import load_split, no_pairs, policy_base
from harness.store import RunStore, dumps_row, read_jsonl
from harness.task import TextTask
from harness.training.trainer import saved_model

EXAMPLES = "examples.jsonl"


def open_store(resolved: ResolvedRun, console: Console) -> RunStore:
    if not isinstance(resolved.task, TextTask):
        raise HarnessError(f"task {resolved.task.registered_name!r} is not a text task")
    store = RunStore.open(resolved.output_dir, resolved.config, resolved.seed, writer=is_main_process())
    console.print(f"run folder: {store.root}")
    return store


def candidates(resolved: ResolvedRun, store: RunStore) -> list[Candidate]:
    """Each method's trained model as the training stage left it in this run folder, read with
    that method's own trainer options (one method may train LoRA and another every weight)."""
    out, base = [], None
    for name in resolved.methods:
        if store.read_json(f"train/{name}/result.json") is None:
            raise HarnessError(f"method {name!r} is not trained in {store.root}: run `harness train` (or `harness run`) with the same options first")
        train = resolved.train_by_method[name]
        trained = model_ref(str(saved_model(store.path("train", name), train)))
        if train.lora:
            base = base or policy_base(resolved, store)
            out.append(Candidate(name, base, trained, train.prompt_format))
        else:
            out.append(Candidate(name, trained, None, train.prompt_format))
    return out


def generate_stage(resolved: ResolvedRun, store: RunStore, console: Console) -> tuple[list[dict], list[dict]]:
    """Generate revisions 0..N of every method; returns (generation rows, the evaluated examples)."""
    examples = load_split(store, resolved.task, "test", resolved.limit, console).rows
    if is_main_process():  # what the leaderboard's example browser shows beside the generations
        store.write_text(EXAMPLES, "".join(dumps_row({"id": str(ex["id"]), "source": resolved.task.judge_source(ex), "reference": ex["reference"]})
                                           for ex in examples))  # fmt: skip
    cands = candidates(resolved, store)
    in_full = {c.model.path for c in cands if c.adapter is None}  # methods trained in full: a model each, not the base
    engine_for = OneModelAtATime(lambda path: build_engine_for(resolved.engine_name, resolved.engine_options, path, path in in_full))
    first = engine_for(cands[0])
    engine = first.describe_config(resolved.sampling)  # the same for every candidate: only the model differs, and their keys hold it
    try:
        rows = generate_revisions(store, resolved.task, first, engine_for, engine, examples, cands, resolved.revisions, resolved.sampling, console=console)
    finally:
        engine_for.close()
    if is_main_process():
        store.record_input("generation", {"engine": engine, "sampling": resolved.sampling.as_dict(),
                                          "revisions": resolved.revisions, "examples": len(examples), "rows": len(rows)})  # fmt: skip
    console.print(f"generations: {store.path(GENERATIONS)} ({len(rows)} completions)")
    return rows, examples


def judge_and_score(resolved: ResolvedRun, store: RunStore, console: Console, examples: list[dict] | None = None, other_judge: tuple[str, dict] | None = None) -> dict:
    """Judge the run's generations with the run's judge (or, given ``other_judge``, add that judge's
    verdicts beside the run's own), score them, and write summary.json and the leaderboard."""
    from harness.judge import build_judge
    from harness.runs import judged_by
    from harness.stages.judge import judge_stage
    from harness.stages.score import summarise, write_summary

    judge = build_judge(*(other_judge or (resolved.judge_name, resolved.judge_options)))
    if other_judge is not None:  # before the test split is read; the run's own judge was checked before the run began its work
        judge.check_access()
    if examples is None:
        examples = load_split(store, resolved.task, "test", resolved.limit, console).rows
    ids = {str(ex["id"]) for ex in examples}
    generations = [g for g in read_jsonl(store.path(GENERATIONS))
                   if g["example_id"] in ids and g["method"] in resolved.methods and g["revision"] <= resolved.revisions]  # fmt: skip
    if not generations:
        raise HarnessError(f"no generations in {store.root}: run `harness generate` (or `harness run`) with the same options first")
    fingerprint, judgments = judge_stage(store, resolved.task, judge, examples, generations, list(resolved.methods),
                                         resolved.head_to_head, resolved.both_orders, resolved.seed, console)  # fmt: skip
    if other_judge is None:  # the run's own judge: its verdicts make the headline tables
        store.record_input("judge", {"config": judge.describe_config(), "fingerprint": fingerprint})
    if all(j["preference"] is None for j in judgments):
        first = next((j["error"] for j in judgments if j["error"]), "no reason given")
        raise HarnessError(f"every verdict failed ({len(judgments)} of {len(judgments)}), so there is nothing to score; the first error: {first}. "
                           f"The failed verdicts are in {store.path('judgments.jsonl')}; fix the judge and rerun: they are retried")  # fmt: skip
    manifest = store.read_json("manifest.json") or {}
    primary = manifest["inputs"]["judge"]
    proxy = manifest["inputs"]["judges"][primary["fingerprint"]]["proxy"]
    meta = {
        "judge": primary["config"],
        "judge_is_proxy": proxy,
        "judge_note": proxy_note(resolved.task.registered_name) if proxy else "",
        "model": resolved.model,
        "dataset": getattr(resolved.task, "dataset_label", resolved.task.registered_name),
        "training_data": (manifest.get("inputs", {}).get("data/preference") or {}).get("origin", ""),
        "revisions": resolved.revisions,
        "sampling": resolved.sampling.as_dict(),
        "engine": resolved.engine_name,
        "versions": manifest.get("versions", {}),
        "device": manifest.get("device", ""),
        "inputs": manifest.get("inputs", {}),
        "config": resolved.config,
        "run_dir": str(store.root),
        "example_ids": [str(ex["id"]) for ex in examples],  # test-split order: the paper protocol's "first 1,024"
    }
    summary = summarise(resolved.task.registered_name, meta, judged_by(store.root, manifest, examples, generations), generations, examples, resolved.bootstrap)
    write_summary(store, summary, console)
    return summary


def proxy_note(task_name: str) -> str:
    """What a run judged by a proxy says of its numbers, and how to get the paper's judge for its task."""
    flags = paper_judge_flags(task_name)
    advice = f"For the paper's judge pass {flags}" if flags else "For an API judge pass --judge openai --judge-arg model=MODEL"
    return ("The judge is an offline proxy (a small local model), not the paper's GPT-4 judge: these numbers show that the pipeline "
            f"runs, not which method is better. {advice} (OPENAI_API_KEY in the environment); any OpenAI-compatible server with "
            "--judge-arg base_url=http://HOST:PORT/v1.")  # fmt: skip


def check_access(resolved: ResolvedRun, model: bool = True, engine: bool = True, judge: bool = True, training_data: bool = True, test_data: bool = True) -> dict[str, str]:
    """What a command's stages need from outside is there (the hub or its cache, an API key, an
    optional package, the data's files): the run's model (training and generation load it),
    engine, judge and the splits its stages read, checked before the run folder is made: a key
    missing at the judging stage would end the run there, a mistyped data file after the model
    loaded. Returns where each split will be read from."""
    from harness.judge import build_judge

    if model:
        path = resolve_model(resolved.model)  # the offline model converts here, once
        check_kind(path, "model", scores=False)
        _check_prompt_formats(resolved, path)
    if engine:
        build_engine_for(resolved.engine_name, resolved.engine_options, resolved.model).check_access()
    if judge:
        build_judge(resolved.judge_name, resolved.judge_options).check_access()
    return _check_sources(resolved, training_data, test_data)


def _check_sources(resolved: ResolvedRun, training: bool, test: bool) -> dict[str, str]:
    """Each split the stages read has a source (``TextTask.check_source``): the SFT task's sft
    split, the training task's pairs (or, where it has none and --build-pairs is given, the test
    examples they are built from) and the evaluated test split; {"TASK SPLIT": its source}."""
    found, train, sft = {}, resolved.train_task, resolved.sft_task
    if training and resolved.sft is not None:
        found[f"{sft.registered_name} sft"] = sft.check_source("sft")
    if training:
        try:
            found[f"{train.registered_name} preference"] = train.check_source("preference")
        except NoSourceError as exc:
            if not resolved.build_pairs:
                raise no_pairs(exc) from None
            found[f"{train.registered_name} preference"] = f"{resolved.build_pairs} pairs the harness builds from held-out test examples"
            test = True
    if test:
        found[f"{resolved.task.registered_name} test"] = resolved.task.check_source("test")
    return found


def _check_prompt_formats(resolved: ResolvedRun, path: str) -> None:
    """The model's tokenizer writes every prompt format that training asks of it (a chat task's
    needs a chat template), which would otherwise stop the run at its first training."""
    from harness.models import load_tokenizer
    from harness.prompting import PromptFormatter

    tokenizer = load_tokenizer(path)
    for config in resolved.train_by_method.values():
        PromptFormatter(resolved.train_task, tokenizer, config.prompt_format)
    if resolved.sft is not None:
        PromptFormatter(resolved.sft_task, tokenizer, resolved.sft.prompt_format)


def run_text(resolved: ResolvedRun, console: Console) -> RunStore:
    from harness.stages.train import train_all

    check_access(resolved)
    store = open_store(resolved, console)
    console.rule("train")
    train_all(resolved, store, console)
    console.rule("generate")
    _, examples = generate_stage(resolved, store, console)
    console.rule("judge and score")
    judge_and_score(resolved, store, console, examples)
    return store
