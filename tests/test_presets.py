"""Presets: the offline default and the paper's protocol resolve, and flags compose over them."""

import pytest

from harness.errors import HarnessError
from harness.presets import preset_layer
from harness.config import deep_merge
from harness.runconfig import resolve


def _resolve(preset, task, **cli):
    return resolve(deep_merge(preset_layer(preset, task, "text"), {"task": task, "methods": "srpo", **cli}))


def test_paper_preset_for_xsum_is_the_papers_protocol():
    run = _resolve("paper", "xsum", methods="srpo,dpo,ipo")
    assert run.task.variant == "xlsum"  # the paper's "XSum" has titles: XL-Sum
    assert run.train_task.registered_name == "tldr"
    assert run.revisions == 5 and run.limit == 1024
    assert (run.bootstrap.paper_n_items, run.bootstrap.paper_resamples, run.bootstrap.paper_sample_size) == (1024, 20, 512)
    assert run.judge_name == "alpaca-eval" and run.judge_options == {"annotator": "alpaca_farm_greedy_gpt4", "model": "gpt-4-0613"}
    assert run.methods["srpo"].beta == 0.01 and run.methods["ipo"].beta == 0.01 and run.methods["dpo"].beta == 0.1
    srpo, dpo = run.train_by_method["srpo"], run.train_by_method["dpo"]
    assert (srpo.lr, srpo.epochs, srpo.batch_size, srpo.warmup_steps, srpo.lora_r, srpo.lora_alpha) == (2e-6, 5, 128, 150, 16, 32)
    assert (dpo.lr, dpo.schedule) == (1e-6, "constant")
    assert run.sft is not None and run.sft.lr == 2e-5 and run.sft.epochs == 2 and run.sft_task is run.train_task  # SFT on TL;DR


def test_paper_preset_for_arena_hard_uses_appendix_d():
    run = _resolve("paper", "arena-hard", methods="srpo,simpo")
    assert run.train_task.registered_name == "ultrafeedback" and run.judge_options["model"] == "gpt-4o"
    assert run.methods["srpo"].beta == 1.3 and run.methods["simpo"].beta == 50.0
    assert run.methods["srpo"].average_log_prob and run.methods["simpo"].average_log_prob
    assert run.train.min_lr_ratio == 0.1 and run.train.lr == 1.25e-6 and run.task.reference_model == "Llama-3.1-8B-Instruct"
    assert run.limit is None and run.bootstrap.paper_n_items == 500  # Appendix D evaluates all 500 prompts, not the summaries' 1,024
    sft = run.sft  # Appendix D: SFT on ShareGPT, one epoch, cosine 2.5e-5 -> 1.25e-5, 10 warm-up steps, batch 64
    assert run.sft_task.registered_name == "sharegpt" and run.train_task.registered_name == "ultrafeedback"
    assert (sft.lr, sft.min_lr_ratio, sft.schedule, sft.warmup_steps, sft.batch_size, sft.epochs, sft.lora) == (2.5e-5, 0.5, "cosine", 10, 64, 1, False)


def test_the_papers_item_count_is_the_tasks_whatever_the_preset():
    """The paper's mean and std resample the items the paper evaluated on the task: a run of all
    500 Arena-Hard prompts is the paper's protocol, not a run short of 1,024."""
    assert _resolve(None, "arena-hard").bootstrap.paper_n_items == 500
    assert _resolve(None, "xsum").bootstrap.paper_n_items == 1024
    assert _resolve(None, "arena-hard", bootstrap={"paper_n_items": 64}).bootstrap.paper_n_items == 64  # what was said is kept


@pytest.mark.parametrize("task", ["xsum", "arena-hard"])
def test_a_proxy_judged_run_names_the_papers_judge_for_its_task(task):
    import re

    from harness.stages.text import proxy_note

    flags = re.search(r"judge pass (--judge .*?) \(", proxy_note(task)).group(1).split()
    paper = _resolve("paper", task)
    assert flags[0] == "--judge" and flags[1] == paper.judge_name
    assert dict(arg.split("=", 1) for arg in flags[3::2]) == paper.judge_options and set(flags[2::2]) == {"--judge-arg"}


def test_flags_override_the_preset():
    run = _resolve("paper", "xsum", limit=8, revisions=1, judge_args={"model": "gpt-4o"}, method_args={"srpo": {"beta": 0.5}})
    assert run.limit == 8 and run.revisions == 1 and run.judge_options["model"] == "gpt-4o" and run.methods["srpo"].beta == 0.5


def test_offline_default_needs_nothing_but_the_install():
    run = _resolve(None, "xsum")
    assert run.model == "smollm2-135m" and run.judge_name == "local-lm" and run.build_pairs == 16 and run.limit == 16


def test_unknown_preset_and_misspelled_method_options_fail_clearly():
    with pytest.raises(HarnessError, match="unknown preset 'papper'"):
        preset_layer("papper", "xsum", "text")
    with pytest.raises(HarnessError, match="did you mean 'srpo'"):
        _resolve(None, "xsum", method_args={"srop": {"beta": 1.0}})


def test_auto_precision_is_settled_for_the_machine_so_cpu_and_gpu_results_never_share_a_key(monkeypatch):
    """bf16 on a GPU and float32 on a CPU give other weights, texts and verdicts: what "auto"
    means is settled when a run is resolved, so the keys of training, generation and judging tell
    the two apart, while the run folder (named by the config as given) stays the same."""
    import torch

    from harness.judge import build_judge
    from harness.stages.judge import judge_fingerprint

    def resolved_and_judge(**cli):
        run = _resolve(None, "xsum", **{"sft": {"epochs": 1}, **cli})
        return run, judge_fingerprint(build_judge(run.judge_name, run.judge_options), "summary", True, 0)

    on_cpu, cpu_judge = resolved_and_judge()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    on_gpu, gpu_judge = resolved_and_judge()
    assert on_gpu.output_dir == on_cpu.output_dir
    assert (on_cpu.train_by_method["srpo"].bf16, on_gpu.train_by_method["srpo"].bf16) == (False, True)
    assert (on_cpu.sft.bf16, on_gpu.sft.bf16) == (False, True)
    assert (on_cpu.engine_options["dtype"], on_gpu.engine_options["dtype"]) == ("float32", "bfloat16")
    assert cpu_judge != gpu_judge
    told, told_judge = resolved_and_judge(train={"bf16": "no"}, engine_args={"dtype": "float32"}, judge_args={"device": "cpu"})  # YAML's no: false
    assert (told.train.bf16, told.engine_options["dtype"], told_judge) == (False, "float32", cpu_judge)  # what was said is kept


def test_auto_checkpointing_is_settled_for_the_machine_in_every_training(monkeypatch):
    """What "auto" checkpointing means is in the key of the preference trainings and of SFT: on a
    CPU off, on a GPU on, unless said otherwise (each training its own) or prefix_sharing "cache"
    needs the KV cache."""
    import torch

    def checkpointing(**cli):
        run = _resolve(None, "xsum", **{"sft": {"epochs": 1}, **cli})
        return run.train_by_method["srpo"].gradient_checkpointing, run.sft.gradient_checkpointing

    assert checkpointing() == (False, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert checkpointing() == (True, True)
    assert checkpointing(train={"gradient_checkpointing": "false"}) == (False, True)  # SFT keeps its own options, as for lr
    assert checkpointing(sft={"epochs": 1, "gradient_checkpointing": False}) == (True, False)
    assert checkpointing(train={"prefix_sharing": "cache"})[0] is False


def test_a_dry_run_checks_what_a_run_checks_writes_nothing_and_prints_a_config_that_reads_back(tmp_path, tiny):
    """`harness run ... --dry-run` before hours of GPU time: the run's options, as YAML that --config
    turns back into the same run (the same folder); a model out of reach or a missing key ends it as
    it would end the run, after the config is printed; no folder is made."""
    import yaml
    from conftest import run_cli
    from tiny import xsum_files

    test, pairs = xsum_files(tmp_path, 4)
    argv = ["run", "--task", "xsum", "--method", "srpo,dpo", "--model", tiny, "--judge", "local-lm", "--judge-arg", f"model={tiny}",
            "--task-arg", f"data_files.test={test}", "--task-arg", f"data_files.preference={pairs}", "--method-arg", "dpo.beta=0.2"]  # fmt: skip
    first = run_cli(*argv, "--dry-run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    config = yaml.safe_load(first.stdout)
    assert config["methods"] == ["srpo", "dpo"] and config["method_args"] == {"dpo": {"beta": 0.2}} and config["limit"] == 16  # the offline preset's
    assert "#     beta: 0.2" in first.stdout and "#     prefix_sharing: packed" in first.stdout  # every resolved option, as comments
    assert "# engine:\n#   engine: transformers\n" in first.stdout and "# judge:\n#   judge: local-lm\n" in first.stdout
    assert f"# data:\n#   xsum preference: local file {pairs}\n#   xsum test: local file {test}\n" in first.stdout  # where each split will be read from
    (tmp_path / "run.yaml").write_text(first.stdout)
    again = run_cli("run", "--config", str(tmp_path / "run.yaml"), "--dry-run", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.splitlines()[0] == first.stdout.splitlines()[0]  # the same run folder
    assert first.stdout.splitlines()[0].endswith("(new)") and not (tmp_path / "runs").exists()
    keyless = run_cli(*argv, "--judge", "openai", "--judge-arg", "model=gpt-4o", "--dry-run", cwd=tmp_path, env={"OPENAI_API_KEY": ""})
    assert keyless.returncode == 2 and keyless.stderr.startswith("error: no API key") and not (tmp_path / "runs").exists()
    assert yaml.safe_load(keyless.stdout)["judge"] == "openai"  # the config was printed before the check that failed


def test_a_dry_run_says_how_much_the_judge_will_be_asked():
    """The paper's XSum protocol with three methods is 36 comparisons an example (18 against the
    references, 18 head to head), 73,728 GPT-4 judgments over 1,024 examples in both orders: said
    before the run, from the plan the judging stage follows."""
    from harness.cli import _judging_plan
    from harness.runconfig import resolve

    paper = resolve({"task": "xsum", "methods": ["srpo", "dpo", "ipo"], "revisions": 5, "limit": 1024})
    assert _judging_plan(paper).startswith("36 comparisons an example (3 methods x revisions 0-5 against the references, 18 head to head), "
                                           "in both orders: at most 73,728 judgments for 1024 examples (a comparison in one order each);")  # fmt: skip
    alone = resolve({"task": "xsum", "methods": ["srpo"], "method_args": {"alpha": [0, 0.5]}, "revisions": 2, "limit": 16, "both_orders": False})
    assert _judging_plan(alone).startswith("9 comparisons an example (2 methods x revisions 0-2 against the references, 3 head to head), "
                                           "in one order: at most 144 judgments for 16 examples (a comparison in one order each);")  # a sweep's rows are methods  # fmt: skip
    assert "for each test example" in _judging_plan(resolve({"task": "xsum", "methods": ["srpo"]}))
