"""Runs that can be trusted: each stage redoes exactly what its inputs changed, per-method options
reach every stage, and a run that goes wrong says so and exits non-zero instead of scoring it."""

import json

import pandas as pd
import pytest
from conftest import run_cli
from openai_server import FakeOpenAIServer
from tiny import xsum_files


def _args(tiny, test, pairs, out, *extra):
    return ["--task", "xsum", "--method", "dpo", "--model", tiny, "--task-arg", f"data_files.test={test}", "--task-arg", f"data_files.preference={pairs}",
            "--limit", "3", "--revisions", "1", "--max-new-tokens", "5", "--train-arg", "batch_size=2", "--output-dir", str(out), *extra]  # fmt: skip


def test_a_task_option_that_changes_the_prompts_retrains(tiny, tmp_path):
    test, pairs = xsum_files(tmp_path)
    out = tmp_path / "run"
    assert run_cli("train", *_args(tiny, test, pairs, out)).returncode == 0
    adapter = out / "train" / "dpo" / "adapter" / "adapter_model.safetensors"
    first = adapter.stat().st_mtime_ns
    assert run_cli("train", *_args(tiny, test, pairs, out)).returncode == 0
    assert adapter.stat().st_mtime_ns == first  # the same inputs: reused
    cut = run_cli("train", *_args(tiny, test, pairs, out, "--task-arg", "max_source_tokens=4"))
    assert cut.returncode == 0, cut.stderr
    assert adapter.stat().st_mtime_ns != first  # every training prompt changed: trained again


def test_built_pairs_are_rebuilt_for_another_prompt_format(tiny, tmp_path):
    from harness.config import stable_hash
    from harness.datasources import Rows
    from harness.engine import SamplingParams
    from harness.models import model_ref
    from harness.stages.train import PairsInputs
    from harness.task import build_task

    task = build_task("xsum")
    make = lambda fmt: PairsInputs(task, Rows.of([{"id": "1"}]), model_ref(tiny), {"engine": "transformers"}, fmt, SamplingParams())  # noqa: E731
    assert stable_hash(make("raw")) != stable_hash(make("chat"))  # the key is the object the stage reads, prompt format included


def test_only_greedy_completions_are_taken_under_another_name(tiny):
    """A neighbour's srpo rows serve this run's srpo[alpha=0] when greedy (under this run's name, key
    and seed); sampled ones drew from a seed of their name, and are not taken."""
    from dataclasses import replace

    from harness.config import stable_hash
    from harness.engine import SamplingParams
    from harness.models import model_ref
    from harness.stages.generate import Candidate, GenerationInputs, _renamed, item_seed, row_key
    from harness.task import build_task

    ex = {"id": "7", "article": "A long article.", "reference": "Gold."}
    ours = Candidate("srpo[alpha=0]", model_ref(tiny), None)
    for sampling, taken in ((SamplingParams(), True), (SamplingParams(temperature=0.7, seed=3), False)):
        mine = GenerationInputs({"engine": "transformers"}, sampling, build_task("xsum"), ours)
        theirs = replace(mine, candidate=replace(ours, method="srpo"))
        rows = [{"example_id": "7", "method": "srpo", "revision": 0, "text": "First.", "seed": 1, "key": row_key(stable_hash(theirs), ex, 0, None)},
                {"example_id": "7", "method": "srpo", "revision": 1, "text": "Second.", "seed": 2, "key": row_key(stable_hash(theirs), ex, 1, "First.")}]  # fmt: skip
        got = _renamed(rows, [ex], {"srpo[alpha=0]": mine})
        if not taken:
            assert got == []
            continue
        assert [(r["method"], r["text"], r["key"], r["seed"]) for r in got] == [
            ("srpo[alpha=0]", "First.", row_key(stable_hash(mine), ex, 0, None), item_seed(0, "7", "srpo[alpha=0]", 0)),
            ("srpo[alpha=0]", "Second.", row_key(stable_hash(mine), ex, 1, "First."), item_seed(0, "7", "srpo[alpha=0]", 1))]  # fmt: skip


def test_a_method_trained_without_lora_generates_from_its_full_weights(tiny, tmp_path):
    test, pairs = xsum_files(tmp_path)
    out = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text("train: {dpo: {lora: false, prompt_format: raw}}\n")
    args = _args(tiny, test, pairs, out, "--config", str(config))
    args[args.index("dpo")] = "dpo,srpo"
    assert run_cli("train", *args).returncode == 0
    generated = run_cli("generate", *args)
    assert generated.returncode == 0, generated.stderr
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    by_method = {r["method"]: r for r in rows}
    assert by_method["dpo"]["adapter"] is None and by_method["dpo"]["model"].endswith("train/dpo/model")
    assert by_method["srpo"]["adapter"].endswith("train/srpo/adapter")
    # served by name: the model trained in full has a name of its own, never the base's
    adapter, full = by_method["srpo"]["adapter"], by_method["dpo"]["model"]
    with FakeOpenAIServer(lambda seen: "A summary.", models={"base", "srpo", "dpo-full"}) as server:
        served = [*args, "--engine", "openai", "--engine-arg", f"base_url={server.base_url}", "--engine-arg", "model=base",
                  "--engine-arg", f"adapter_models.{adapter}=srpo"]  # fmt: skip
        unnamed = run_cli("generate", *served)
        assert unnamed.returncode == 2 and f"no served name for the model trained in full {full!r}" in unnamed.stderr
        named = run_cli("generate", *served, "--engine-arg", f"adapter_models.{full}=dpo-full")
        assert named.returncode == 0, named.stderr
        assert {b["model"] for b in server.bodies} == {"srpo", "dpo-full"}


def test_a_run_folder_moved_elsewhere_resumes_without_redoing_anything(tiny, tmp_path):
    """A run folder renamed or moved (and named with --output-dir) keeps its work: trained models
    are found where the folder is now, the SFT model the methods start from included, and keys
    name weights by their files, not by the folder they were in."""
    import shutil

    test, pairs = xsum_files(tmp_path)
    sft = tmp_path / "sft.jsonl"
    sft.write_text(test.read_text())
    config = tmp_path / "c.yaml"
    config.write_text("sft: {epochs: 1, batch_size: 2}\ntrain: {srpo: {lora: false}}\n")  # LoRA SFT merged, then a LoRA and a full method
    first, moved = tmp_path / "first", tmp_path / "elsewhere" / "renamed"
    with FakeOpenAIServer(lambda prompt: "Preferred: A") as server:
        def run(out, cache):
            args = _args(tiny, test, pairs, out, "--config", str(config), "--task-arg", f"data_files.sft={sft}", "--judge", "openai",
                         "--judge-arg", f"base_url={server.base_url}", "--judge-arg", f"cache_path={cache}")  # fmt: skip
            args[args.index("dpo")] = "dpo,srpo"
            return run_cli("run", *args)

        assert run(first, tmp_path / "one.sqlite").returncode == 0
        served, summary = server.served, json.loads((first / "summary.json").read_text())
        weights = sorted(p.relative_to(first) for p in first.rglob("*.safetensors"))
        moved.parent.mkdir()
        shutil.move(first, moved)
        stamps = {p: (moved / p).stat().st_mtime_ns for p in weights}
        again = run(moved, tmp_path / "two.sqlite")  # a fresh verdict cache: only the run's own verdicts can be reused
        assert again.returncode == 0, again.stderr
        assert server.served == served  # nothing judged again
    assert {p: (moved / p).stat().st_mtime_ns for p in weights} == stamps  # nothing trained again
    assert not (moved / "generations.stale.jsonl").exists()  # nothing generated again
    assert json.loads((moved / "summary.json").read_text())["results"] == summary["results"]


def test_the_paper_preset_keeps_its_dpo_schedule_under_a_partial_override(tmp_path):
    from harness.cli import build_parser, resolve_args

    config = tmp_path / "c.yaml"
    config.write_text("train: {dpo: {lr: 5.0e-7}}\n")
    args = build_parser().parse_args(["run", "--task", "xsum", "--method", "dpo,srpo", "--preset", "paper", "--config", str(config),
                                      "--train-arg", "srpo.warmup_steps=7"])  # fmt: skip
    run = resolve_args(args)
    dpo, srpo = run.train_by_method["dpo"], run.train_by_method["srpo"]
    assert (dpo.lr, dpo.schedule, dpo.batch_size) == (5e-7, "constant", 128)  # merged deeply: the preset's constant schedule stays
    assert (srpo.lr, srpo.warmup_steps, srpo.schedule) == (2e-6, 7, "cosine")  # --train-arg METHOD.KEY works


def test_every_preset_is_a_valid_layer_of_the_schema():
    from harness.presets import PRESETS, preset_layer
    from harness.runconfig import validate

    for preset in PRESETS:
        for task in ("xsum", "tldr", "arena-hard", "ultrafeedback"):
            validate({**preset_layer(preset, task, "text"), "task": task, "methods": "srpo"})


def test_harness_list_presets_shows_every_option_each_task_gets(cli):
    """Each row read back (common options, then those suffixed with one task's name) is exactly that
    task's layer: a key left out, or one task's option shown as the protocol's, fails."""
    from harness.presets import listing, preset_layer

    out = cli("list", "presets")
    assert out.returncode == 0 and "huggyllama/llama-7b" in out.stdout and "every text task" in out.stdout
    rows = listing()
    assert [(name, tasks) for name, tasks, *_ in rows] == [("offline", "every text task"), ("paper", "xsum, tldr"), ("paper", "arena-hard, ultrafeedback")]
    for name, tasks, _, settings in rows[1:]:
        for task in tasks.split(", "):
            shown = {}
            for item in settings.split("  "):
                key, value = item.split("=", 1)
                if " (" not in value or value.endswith(f" ({task})"):
                    shown[key] = value.removesuffix(f" ({task})")
            flat = pd.json_normalize(preset_layer("paper", task, "text")).iloc[0].to_dict()
            assert shown == {key: str(value) for key, value in flat.items()}


def test_a_diverging_run_stops_with_a_clear_error_and_saves_no_adapter(tiny, tmp_path):
    test, pairs = xsum_files(tmp_path)
    out = tmp_path / "run"
    result = run_cli("run", *_args(tiny, test, pairs, out, "--train-arg", "lr=1e30", "--train-arg", "max_steps=6"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "training 'dpo' diverged at step" in result.stderr and "Lower the learning rate" in result.stderr
    assert not (out / "train" / "dpo" / "adapter").exists() and not (out / "summary.json").exists()


def test_an_unreachable_judge_fails_the_run_and_keeps_its_generations(tiny, tmp_path):
    test, pairs = xsum_files(tmp_path)
    out = tmp_path / "run"
    result = run_cli("run", *_args(tiny, test, pairs, out, "--judge", "openai", "--judge-arg", "base_url=http://127.0.0.1:9/v1",
                                   "--judge-arg", "max_retries=0", "--judge-arg", f"cache_path={tmp_path / 'c.sqlite'}"))  # fmt: skip
    assert result.returncode == 2 and "every verdict failed" in result.stderr and "Traceback" not in result.stderr
    assert (out / "generations.jsonl").exists() and not (out / "summary.json").exists()
    with FakeOpenAIServer(lambda prompt: "Preferred: A") as server:  # the judge is back: the failed verdicts are retried
        again = run_cli("run", *_args(tiny, test, pairs, out, "--judge", "openai", "--judge-arg", f"base_url={server.base_url}",
                                      "--judge-arg", f"cache_path={tmp_path / 'c.sqlite'}"))  # fmt: skip
        assert again.returncode == 0, again.stderr
        texts = {(g["example_id"], g["text"]) for g in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}
        assert server.served == 2 * len(texts)  # every distinct comparison, both orders: no failed verdict was counted as done
    rows = json.loads((out / "summary.json").read_text())["results"]
    assert all(r["n"] == 3 and r["failed"] == 0 for r in rows), rows


@pytest.mark.parametrize("content, message", [("", "holds no rows"), ('{"id": 1, "article": "a", "chosen": "x"}\n', "field 'rejected' is missing")])
def test_a_broken_preference_file_is_an_error_not_a_reason_to_build_pairs(tiny, tmp_path, content, message):
    test, _ = xsum_files(tmp_path)
    pairs = tmp_path / "bad.jsonl"
    pairs.write_text(content)
    result = run_cli("train", *_args(tiny, test, pairs, tmp_path / "run", "--build-pairs", "4"))
    assert result.returncode == 2 and message in result.stderr and "builds pairs" not in result.stdout


def test_the_single_order_coin_reads_the_items_identity_not_its_position():
    from harness.judge import Comparison, Judge, Verdict, judge_pairs

    class FirstWins(Judge):
        def judge(self, comparisons):
            return [Verdict(1.0) for _ in comparisons]

    items = [("summary", "Summarise.", f"source {i}", f"candidate {i}", f"opponent {i}") for i in range(12)]
    keys = [f"{i}/0/srpo/reference" for i in range(12)]
    whole = judge_pairs(FirstWins(), items, both_orders=False, seed=5, keys=keys)
    resumed = judge_pairs(FirstWins(), items[7:], both_orders=False, seed=5, keys=keys[7:])  # a rerun judging the rest in a new chunk
    assert [v.preference for v in whole[7:]] == [v.preference for v in resumed]
    assert {v.preference for v in whole} == {0.0, 1.0}
    assert Comparison  # the comparisons themselves are built from the items


def test_tabular_training_runs_on_one_thread(monkeypatch):
    import numpy as np
    import torch

    from harness.method import build_method
    from harness.policies import tabular

    seen = []
    method = build_method("dpo", {"beta": 1.0})
    original = type(method).loss
    monkeypatch.setattr(type(method), "loss", lambda self, p, r: (seen.append(torch.get_num_threads()), original(self, p, r))[1])
    before = torch.get_num_threads()
    tabular.train_tabular(method, np.array([2, 2, 0]), np.array([0, 1, 1]), 3, steps=3, lr=0.1, seed=0)
    assert seen == [1, 1, 1] and torch.get_num_threads() == before


def test_a_task_with_prompts_alone_trains_on_pairs_built_from_its_held_out_prompts(tiny, tmp_path):
    """Arena-Hard has a test split only: --build-pairs (the offline default) trains on gold-vs-policy
    pairs from the prompts after the evaluated ones, the baseline's answers chosen (as many as are
    left, and says so); without it, or with no prompt left, the run stops before any training, saying
    what would train it."""
    folder = tmp_path / "ah"
    (folder / "model_answer").mkdir(parents=True)
    ids = [f"q{i}" for i in range(6)]
    (folder / "question.jsonl").write_text("".join(json.dumps({"uid": q, "prompt": f"Explain bridge number {i}."}) + "\n" for i, q in enumerate(ids)))
    (folder / "model_answer" / "gpt-4-0314.jsonl").write_text("".join(json.dumps({"uid": q, "answer": f"Bridge {q} is long."}) + "\n" for q in ids))
    args = ["--task", "arena-hard", "--task-arg", f"data_dir={folder}", "--method", "dpo", "--model", tiny, "--limit", "3",
            "--max-new-tokens", "5", "--train-arg", "batch_size=2", "--train-arg", "prompt_format=raw"]  # fmt: skip
    refused = run_cli("train", *args, "--build-pairs", "0", "--output-dir", str(tmp_path / "none"))
    assert refused.returncode == 2 and "has no 'preference' split" in refused.stderr and "--build-pairs N" in refused.stderr
    none_left = run_cli("train", *args, "--limit", "6", "--build-pairs", "3", "--output-dir", str(tmp_path / "all"))  # the last --limit counts
    assert none_left.returncode == 2 and "holds 6 examples and --limit 6 evaluates them all" in none_left.stderr
    built = run_cli("train", *args, "--build-pairs", "4", "--output-dir", str(tmp_path / "run"))  # 3 prompts are left for 4 pairs
    assert built.returncode == 0, built.stderr[-2000:]
    assert "building 3 gold-vs-policy pairs (4 asked; the test split ends at 6) from test examples 4..6 (not evaluated)" in built.stdout
    pairs = [json.loads(line) for line in (tmp_path / "run" / "data" / "pairs.jsonl").read_text().splitlines()]
    assert [p["id"] for p in pairs] == ids[3:] and [p["chosen"] for p in pairs] == [f"Bridge {q} is long." for q in ids[3:]]
    assert (tmp_path / "run" / "train" / "dpo" / "adapter" / "adapter_model.safetensors").exists()


def test_the_sft_stage_reads_its_own_task_and_the_methods_start_from_its_model(tiny, tmp_path):
    """--sft-task: the SFT stage trains on another task's sft split (the paper's Arena-Hard protocol:
    ShareGPT, before UltraFeedback), in that task's prompt format; every method starts from it."""
    test, pairs = xsum_files(tmp_path)
    conversations = [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"Describe bridge {i}."}, {"from": "gpt", "value": f"Bridge {i} spans the river."}]}
                     for i in range(4)]  # fmt: skip
    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps(conversations))
    config = tmp_path / "c.yaml"
    config.write_text("sft: {epochs: 1, batch_size: 2, prompt_format: raw}\n")  # the tiny tokenizer has no chat template
    out = tmp_path / "run"
    result = run_cli("train", *_args(tiny, test, pairs, out, "--config", str(config), "--sft-task", "sharegpt", "--sft-task-arg", f"data_files.sft={sharegpt}"))
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["data/sft"]["origin"] == str(sharegpt) and manifest["inputs"]["data/sft"]["rows"] == 4
    assert json.loads((out / "train" / "dpo" / "result.json").read_text())["base_model"] == str(out / "train" / "sft" / "merged")


def test_a_run_copies_what_a_folder_beside_it_did_on_the_same_inputs(tiny, tmp_path):
    """Adding a method to a comparison makes a new run folder (another config). What a folder beside
    it trained and generated on the same inputs is copied, byte for byte and with its files' times,
    so the keys that name the adapter by its files hold and its completions are taken too, and so
    are the same judge's verdicts on them. A method whose inputs changed is trained, and a folder
    that a run holds now is passed over."""
    import fcntl

    from harness.stages.generate import item_seed

    test, pairs = xsum_files(tmp_path)
    runs = tmp_path / "runs"
    first, second, changed, beside_busy = (runs / name for name in ("first", "second", "changed", "busy"))

    def stages(out, methods, *extra):
        args = _args(tiny, test, pairs, out, "--judge-arg", f"model={tiny}", *extra)
        args[args.index("dpo")] = methods
        output = run_cli("run", *args)
        assert output.returncode == 0, output.stderr
        return output.stdout

    stages(first, "dpo")
    said = stages(second, "dpo,srpo")
    assert f"training dpo: done on the same inputs in {first}; copied, not redone" in said and "training srpo" not in said
    assert f"generations: 6 generated from the same inputs in {first}; copied, not generated again" in said  # 3 examples, revisions 0 and 1
    assert f"judge: 6 verdicts of this judge on the same texts in {first}; copied, not asked again" in said  # dpo against the references
    summary = lambda out: json.loads((out / "summary.json").read_text())["results"]  # noqa: E731
    assert [r for r in summary(second) if r["method"] == "dpo" and r["opponent"] == "reference"] == summary(first)
    weights = "train/dpo/adapter/adapter_model.safetensors"
    assert (second / weights).read_bytes() == (first / weights).read_bytes()
    assert (second / weights).stat().st_mtime_ns == (first / weights).stat().st_mtime_ns
    rows = lambda out: {(r["example_id"], r["method"], r["revision"]): r for r in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}  # noqa: E731
    theirs, ours = rows(first), rows(second)
    assert {k: r["text"] for k, r in ours.items() if k[1] == "dpo"} == {k: r["text"] for k, r in theirs.items()}
    assert {r["adapter"] for k, r in ours.items() if k[1] == "dpo"} == {str(second / "train/dpo/adapter")}  # this run's copy
    assert (second / weights).stat().st_ino == (first / weights).stat().st_ino  # a hard link: a 13 GB SFT model is not written twice

    said = stages(changed, "dpo", "--method-arg", "beta=0.1,0.2")  # a sweep names its rows dpo[beta=0.1] (dpo's default) and dpo[beta=0.2]
    assert f"training dpo[beta=0.1]: done on the same inputs in {second} (as dpo); copied, not redone" in said  # the latest folder first
    assert "training dpo[beta=0.2]: done" not in said
    assert f"generations: 6 generated from the same inputs in {second}; copied, not generated again" in said  # greedy: dpo's texts are dpo[beta=0.1]'s
    renamed = {k: r for k, r in rows(changed).items() if k[1] == "dpo[beta=0.1]"}
    assert {(k[0], k[2]): r["text"] for k, r in renamed.items()} == {(k[0], k[2]): r["text"] for k, r in theirs.items()}
    assert {r["adapter"] for r in renamed.values()} == {str(changed / "train/dpo[beta=0.1]/adapter")}
    assert [r["seed"] for r in renamed.values()] == [item_seed(0, k[0], "dpo[beta=0.1]", k[2]) for k in renamed]  # its own name's seeds
    assert (changed / "train/dpo[beta=0.1]/adapter/adapter_model.safetensors").read_bytes() == (first / weights).read_bytes()
    assert (changed / "train/dpo[beta=0.2]/adapter/adapter_model.safetensors").read_bytes() != (first / weights).read_bytes()
    record = json.loads((changed / "stages/train/dpo[beta=0.1].json").read_text())
    assert record["artifacts"] == ["train/dpo[beta=0.1]/result.json"] and record["copied_as"] == "train/dpo"
    rerun = stages(changed, "dpo", "--method-arg", "beta=0.1,0.2")
    assert "training" not in rerun and "copied" not in rerun  # the copy is this folder's own now

    theirs_before = {f: (first / "train/dpo" / f).read_bytes() for f in ("adapter/adapter_model.safetensors", "metrics.jsonl", "result.json", "reference_logps.pt")}
    stages(second, "dpo,srpo", "--train-arg", "dpo.lr=1e-4")  # second retrains dpo over its linked files
    assert (second / weights).read_bytes() != theirs_before["adapter/adapter_model.safetensors"]
    assert {f: (first / "train/dpo" / f).read_bytes() for f in theirs_before} == theirs_before  # the folder it linked from keeps its own

    with open(first / ".lock") as held, open(second / ".lock") as held_too, open(changed / ".lock") as held_as_well:
        for fh in (held, held_too, held_as_well):  # (changed holds dpo too, as dpo[beta=0.1])
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run writing them holds them
        said = stages(beside_busy, "dpo")
    assert "training dpo: done" not in said and not json.loads((beside_busy / "stages/train/dpo.json").read_text()).get("copied_from")
