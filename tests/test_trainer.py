"""The shared trainer on a tiny local model: every method learns, references are computed once,
SRPO's loss equals Eq. 17 from six log-probs computed one by one, kill-and-resume, DDP on gloo."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli

from harness.method import build_method
from harness.models import load_causal_lm, load_tokenizer
from harness.policies.lm import SequenceScorer
from harness.prompting import PromptFormatter
from harness.task import build_task
from harness.tasks.xsum import XSum
from harness.training.config import TrainConfig
from harness.datasources import Rows
from harness.models import model_ref
from harness.training.trainer import Trainer, TrainInputs

ARTICLES = [
    "The council said the new bridge will open next year after a delay caused by flooding in the town.",
    "Police are appealing for witnesses after a car crashed into a shop on the high street on Sunday.",
    "The club confirmed the striker has signed a new three-year contract following a successful season.",
    "Scientists have found that the river is cleaner than at any time in the last fifty years.",
]
ROWS = [
    {"id": str(i), "article": a * (1 + i % 2), "chosen": a.split(" after")[0].split(" following")[0] + ".", "rejected": "The weather was nice."}
    for i, a in enumerate(ARTICLES)
]


@pytest.fixture
def own_precision():
    """accelerate keeps the mixed precision of a process's first Accelerator: a test that sets
    bf16 (other tests train in the machine's default, bf16 on a GPU) starts from, and leaves, a
    fresh state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def _trainer(method_name, tiny, out, method=None, task=None, **train):
    options = {"lr": 0.01, "batch_size": 2, "epochs": 8, "lora_dropout": 0.0, "checkpoint_every": 0, **train}
    method = method or build_method(method_name, {} if method_name == "simpo" else {"beta": 0.5})
    return Trainer(TrainInputs(method, TrainConfig(**options), task or build_task("xsum"), model_ref(tiny), Rows.of(ROWS), seed=0), out)


def _evaluate(trainer, model, tokenizer):
    """Mean loss and margins of the trainer's method on all pairs under ``model``."""
    scorer = SequenceScorer(model, tokenizer.pad_token_id)
    pairs = trainer._encode(ROWS, tokenizer)
    with torch.no_grad():
        reference = trainer.reference_logprobs(scorer, pairs) if trainer.method.uses_reference else None
        losses, metrics = trainer.pair_losses(scorer, pairs, reference)
    return losses.mean().item(), {k: v.float().mean().item() for k, v in metrics.items()}


@pytest.mark.parametrize("name", ["srpo", "dpo", "ipo", "simpo", "rpo"])
def test_each_method_improves_its_own_objective(tiny, tmp_path, name):
    from peft import PeftModel

    trainer = _trainer(name, tiny, tmp_path / name)
    tokenizer = load_tokenizer(tiny)
    before_loss, before = _evaluate(trainer, load_causal_lm(tiny).eval(), tokenizer)
    result = trainer.train()
    trained = PeftModel.from_pretrained(load_causal_lm(tiny), result.model_dir).eval()  # the standard PEFT format
    after_loss, after = _evaluate(trainer, trained, tokenizer)
    assert after_loss < before_loss
    assert after["margin"] > before["margin"]  # the chosen-over-rejected margin grows
    if name == "srpo":
        assert after["revision_margin"] > before["revision_margin"]  # and so does the revision policy's
    lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, result.steps + 1)) and "margin" in lines[0]


def test_reference_logprobs_are_computed_once_and_cached(tiny, tmp_path, monkeypatch):
    calls = []
    original = Trainer.reference_logprobs

    def counting(self, scorer, pairs, batch_size=1):
        calls.append(len(pairs))
        return original(self, scorer, pairs, batch_size)

    monkeypatch.setattr(Trainer, "reference_logprobs", counting)
    _trainer("srpo", tiny, tmp_path / "a", epochs=3).train()
    assert calls == [len(ROWS)]  # once for the whole dataset, never per step or epoch
    _trainer("srpo", tiny, tmp_path / "a", epochs=3).train()
    assert calls == [len(ROWS)]  # a rerun reads the cached file
    _trainer("simpo", tiny, tmp_path / "b", epochs=1).train()
    assert calls == [len(ROWS)]  # reference-free: never computed


class _Planted:
    """A pickle that runs code when loaded: what a file in a folder someone else wrote may hold."""

    def __reduce__(self):
        return (os.mkdir, (str(_Planted.marker),))


def test_a_cached_reference_or_checkpoint_that_is_not_plain_tensors_runs_no_code_and_is_recomputed(tiny, tmp_path, monkeypatch):
    calls = []
    original = Trainer.reference_logprobs
    monkeypatch.setattr(Trainer, "reference_logprobs", lambda self, *a: calls.append(1) or original(self, *a))
    _Planted.marker = tmp_path / "code-ran"
    out = tmp_path / "a"
    out.mkdir()
    torch.save({"key": "x", "logps": _Planted()}, out / "reference_logps.pt")
    (out / "checkpoint").mkdir()
    torch.save({"key": "x", "step": 1, "rng": _Planted()}, out / "checkpoint" / "state.pt")
    assert _trainer("srpo", tiny, out, epochs=1).train().steps == 2  # trained from step 0
    assert calls == [1] and not _Planted.marker.exists()


def test_sequences_longer_than_the_models_positions_stop_before_the_first_forward(tiny, tmp_path, monkeypatch):
    """A model of 48 positions and XSum prompts of more: one message naming what to cut, before the
    reference pass (learned positions would index out of their table)."""
    import shutil

    from harness.errors import HarnessError

    short = shutil.copytree(tiny, tmp_path / "short")
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 48}))
    monkeypatch.setattr(Trainer, "reference_logprobs", lambda *a, **k: pytest.fail("the reference pass ran"))
    with pytest.raises(HarnessError, match=r"^training sequences of up to \d+ tokens run past the model's 48 positions: lower --task-arg max_source_tokens"):
        _trainer("dpo", str(short), tmp_path / "out").train()


def _full_forward_logprob(model, context: list[int], completion: list[int]) -> torch.Tensor:
    """log pi(completion | context) the plain way: the whole sequence, full-vocabulary logits."""
    ids = torch.tensor([context + completion])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # [T, V]
    positions = torch.arange(len(context) - 1, len(context) + len(completion) - 1)
    return logprobs[positions, torch.tensor(completion)].sum()


def test_trainer_srpo_loss_equals_eq17_from_six_logprobs_computed_one_by_one(tiny, tmp_path):
    from peft import PeftModel

    trainer = _trainer("srpo", tiny, tmp_path / "srpo", method=build_method("srpo", {"beta": 0.5, "alpha": 0.3}), epochs=3)
    result = trainer.train()
    tokenizer = load_tokenizer(tiny)
    model = PeftModel.from_pretrained(load_causal_lm(tiny), result.model_dir).eval()
    pairs = trainer._encode(ROWS, tokenizer)
    scorer = SequenceScorer(model, tokenizer.pad_token_id)
    with torch.no_grad():
        reference = trainer.reference_logprobs(scorer, pairs)
        losses, _ = trainer.pair_losses(scorer, pairs, reference)
        formatter = PromptFormatter(build_task("xsum"), tokenizer)
        for i, (row, pair) in enumerate(zip(ROWS, pairs)):
            # the token ids are the texts the task's templates produce
            ctx, comp = pair.sequence("chosen")
            assert tokenizer.decode(sum(ctx, []) + comp) == formatter.prompt(row) + " " + row["chosen"] + tokenizer.eos_token
            ctx, comp = pair.sequence("chosen|rejected")
            assert tokenizer.decode(sum(ctx, []) + comp) == formatter.revision_prompt(row, row["rejected"]) + " " + row["chosen"] + tokenizer.eos_token
            h = {}
            for key in trainer.method.needs:
                ctx, comp = pair.sequence(key)
                policy = _full_forward_logprob(model, sum(ctx, []), comp)
                with model.disable_adapter():
                    ref = _full_forward_logprob(model, sum(ctx, []), comp)
                h[key] = (policy - ref).item()
            beta, alpha = 0.5, 0.3
            eq15 = (0.5 - beta * (h["chosen|rejected"] - h["rejected|rejected"])) ** 2 + (0.5 - beta * (h["chosen|chosen"] - h["rejected|chosen"])) ** 2
            eq16 = (beta * (h["chosen|rejected"] + h["chosen"] - h["rejected|chosen"] - h["rejected"]) - 1) ** 2
            assert abs(h["chosen"]) > 1e-3  # the adapter really moved the policy: the check is not 1 == 1
            # batched with padding, float32 sums in another order: agreement to 5e-4 (a wrong term would be off by far more)
            assert losses[i].item() == pytest.approx((1 - alpha) * eq16 + alpha * eq15, rel=5e-4, abs=1e-4)


def _train_cmd(tiny, pairs_file, out, *extra):
    return ["train", "--task", "xsum", "--method", "srpo", "--model", tiny, "--task-arg", f"data_files.preference={pairs_file}",
            "--train-arg", "lr=0.01", "--train-arg", "batch_size=1", "--output-dir", str(out), *extra]  # fmt: skip


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS + [dict(r, id=r["id"] + "b") for r in ROWS[:2]]))
    return path


def test_kill_during_training_then_rerun_resumes_to_the_same_loss(tiny, tmp_path, pairs_file):
    # deterministic kernels: without them, a run resumed on an H100 ended rel 3.5e-3 from the uninterrupted one (likely atomics, which add in another order each run)
    extra = ("--train-arg", "max_steps=120", "--train-arg", "checkpoint_every=5", "--train-arg", "deterministic=true")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *_train_cmd(tiny, pairs_file, killed, *extra)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = killed / "train" / "srpo" / "checkpoint" / "state.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "training ended before its first checkpoint: nothing was interrupted"
    resumed_from = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < resumed_from < 120
    assert run_cli(*_train_cmd(tiny, pairs_file, killed, *extra)).returncode == 0
    whole = tmp_path / "whole"
    assert run_cli(*_train_cmd(tiny, pairs_file, whole, *extra)).returncode == 0
    a = json.loads((killed / "train/srpo/result.json").read_text())
    b = json.loads((whole / "train/srpo/result.json").read_text())
    assert a["steps"] == b["steps"] == 120
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-6, abs=1e-9)
    steps = [json.loads(line)["step"] for line in (killed / "train/srpo/metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 121))  # no step logged twice or lost


def test_deterministic_kernels_are_on_for_that_training_only(tiny, tmp_path, monkeypatch):
    seen = []
    micro_step = Trainer.micro_step
    monkeypatch.setattr(Trainer, "micro_step", lambda self, *args: (seen.append(torch.are_deterministic_algorithms_enabled()), micro_step(self, *args))[1])
    _trainer("dpo", tiny, tmp_path / "deterministic", epochs=1, deterministic=True).train()
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()  # the next stage (generation) is not slowed
    seen.clear()
    _trainer("dpo", tiny, tmp_path / "default", epochs=1).train()
    assert seen and not any(seen)


def test_two_gloo_processes_give_the_single_process_losses(tiny, tmp_path, pairs_file):
    extra = ("--train-arg", "batch_size=2", "--train-arg", "lora_dropout=0", "--train-arg", "epochs=2")
    cpu = {"CUDA_VISIBLE_DEVICES": ""}  # gloo runs on CPUs: so does the single process, also on a GPU machine
    single = tmp_path / "single"
    assert run_cli(*_train_cmd(tiny, pairs_file, single)[:-2], "--output-dir", str(single), *extra, env=cpu).returncode == 0
    ddp = tmp_path / "ddp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "harness.cli"]  # fmt: skip
    out = subprocess.run([*launch, *_train_cmd(tiny, pairs_file, ddp)[:-2], "--output-dir", str(ddp), *extra],
                         capture_output=True, text=True, timeout=600, env={**os.environ, **cpu})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    read = lambda d: [json.loads(line) for line in (d / "train/srpo/metrics.jsonl").read_text().splitlines()]  # noqa: E731
    one, two = read(single), read(ddp)
    assert [m["processes"] for m in two] == [2] * len(two) and [m["processes"] for m in one] == [1] * len(one)
    assert [m["loss"] for m in two] == pytest.approx([m["loss"] for m in one], rel=1e-5, abs=1e-6)
    assert [m["tokens"] for m in two] == [m["tokens"] for m in one]


def test_sft_stage_then_preference_training_from_the_sft_model(tiny, tmp_path):
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"id": r["id"], "article": r["article"], "reference": r["chosen"]}) + "\n" for r in ROWS))
    pref = tmp_path / "pref.jsonl"
    pref.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text("sft: {lr: 0.01, epochs: 5, batch_size: 2}\n")  # SFT options through the config file
    result = run_cli("train", "--task", "xsum", "--method", "dpo", "--model", tiny, "--config", str(config), "--task-arg", f"data_files.sft={sft}",
                     "--task-arg", f"data_files.preference={pref}", "--train-arg", "batch_size=2", "--output-dir", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    nll = [json.loads(line)["nll"] for line in (out / "train/sft/metrics.jsonl").read_text().splitlines()]
    assert nll[-1] < nll[0]
    dpo = json.loads((out / "train/dpo/result.json").read_text())
    assert dpo["base_model"] == str(out / "train" / "sft" / "merged")  # pi_ref is the SFT model, as in the paper
    assert (out / "train/sft/merged/config.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["data/sft"]["rows"] == 4 and manifest["inputs"]["data/preference"]["source"] == "local"


def test_bf16_holds_the_frozen_base_in_bf16_and_trains_float32_adapters(tiny, tmp_path, monkeypatch, own_precision):
    """The GPU default (bf16 autocast with LoRA), forced on the CPU, where no other test runs it:
    the frozen base in bfloat16, the adapters, their gradients and AdamW's moments in float32 and
    their inputs in bfloat16,
    the reference computed under the policy's numerics (step 1's log-ratios are zero),
    with gradient checkpointing and prefix sharing, and the adapter saved in float32."""
    from safetensors.torch import load_file

    import harness.training.trainer as trainer_module

    seen = {"lora_inputs": set()}
    wrap = trainer_module._wrap_model

    def wrap_and_watch(model, config, autocast):
        seen["model"] = wrap(model, config, autocast)
        for name, module in seen["model"].named_modules():
            if name.endswith("lora_A.default"):
                module.register_forward_pre_hook(lambda _, args: seen["lora_inputs"].add(args[0].dtype))
        return seen["model"]

    monkeypatch.setattr(trainer_module, "_wrap_model", wrap_and_watch)

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            seen["grads"] = {p.grad.dtype for group in self.param_groups for p in group["params"]}
            loss = super().step(*args, **kwargs)
            seen["moments"] = {v.dtype for state in self.state.values() for k, v in state.items() if k in ("exp_avg", "exp_avg_sq")}
            return loss

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    out = tmp_path / "srpo"
    result = _trainer("srpo", tiny, out, epochs=2, bf16=True, gradient_checkpointing=True).train()
    params = list(seen["model"].named_parameters())
    assert {p.dtype for _, p in params if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for _, p in params if p.requires_grad} == {torch.float32} and any("lora_" in n for n, p in params if p.requires_grad)
    assert seen["grads"] == seen["moments"] == {torch.float32}
    # the adapters read the bf16 activations as they are: no float32 copy of every LoRA input (which autocast
    # would cast straight back, keeping a second bf16 copy for backward)
    assert seen["lora_inputs"] == {torch.bfloat16}
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # policy == reference before the first update: zero on the CPU, 4e-6 on an H100 (the reference pass and a training forward run other kernels)
    assert steps[0]["margin"] == pytest.approx(0.0, abs=1e-4) and steps[0]["revision_margin"] == pytest.approx(0.0, abs=1e-4)
    assert steps[-1]["margin"] > 0 and all(math.isfinite(s["loss"]) for s in steps)
    assert {t.dtype for t in load_file(f"{result.model_dir}/adapter_model.safetensors").values()} == {torch.float32}


def test_a_finished_bf16_training_leaves_no_model_behind(tiny, tmp_path, monkeypatch, own_precision):
    """Under bf16 (the GPU default) accelerate's autocast wrapper puts the scorer and its model in a
    reference cycle; the trainer collects it, so the next method's training or generation does not
    share the accelerator with a finished model. The collector is off here, as it may well be
    between two trainings of a run."""
    import gc
    import weakref

    import harness.training.trainer as trainer_module

    trained = []
    wrap = trainer_module._wrap_model

    def wrap_and_watch(*args):
        model = wrap(*args)
        trained.append(weakref.ref(model))
        return model

    monkeypatch.setattr(trainer_module, "_wrap_model", wrap_and_watch)
    gc.collect()
    gc.disable()
    try:
        _trainer("dpo", tiny, tmp_path / "dpo", epochs=1, bf16=True).train()
        assert len(trained) == 1 and trained[0]() is None
    finally:
        gc.enable()


def test_bf16_adapters_reading_bf16_inputs_train_as_with_peft_float32_copies(tiny, tmp_path, monkeypatch, own_precision):
    """Leaving out peft's float32 copy of each LoRA input under autocast saves memory and nothing
    else: autocast cast the copy straight back to bf16, so every step's loss is the same."""
    import harness.training.trainer as trainer_module

    def losses(out):
        result = _trainer("dpo", tiny, out, epochs=3, bf16=True, lora_dropout=0.0).train()
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    without_copies = losses(tmp_path / "bf16")
    wrap = trainer_module._wrap_model
    monkeypatch.setattr(trainer_module, "_wrap_model", lambda model, config, autocast: wrap(model, config, autocast=False))  # peft's casting left on
    with_copies = losses(tmp_path / "copies")
    assert len(without_copies) == 6 and without_copies == with_copies
    assert without_copies[-1] < without_copies[0]


def test_merged_adapter_equals_adapter_on_base(tiny, tmp_path, own_precision):
    from peft import PeftModel

    # float32 on a GPU too: there the trainer holds the base in bf16, and the merge rounds into it
    result = _trainer("dpo", tiny, tmp_path / "dpo", epochs=2, merge_adapter=True, bf16=False).train()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(load_causal_lm(tiny), result.model_dir).eval()(input_ids=ids).logits
        merged = load_causal_lm(str(tmp_path / "dpo" / "merged")).eval()(input_ids=ids).logits
    assert torch.allclose(adapted, merged, atol=1e-4)


def test_logprobs_in_chunks_equal_one_pass_and_never_hold_every_logit(tiny, monkeypatch):
    """The LM head in chunks of 20 positions (their logits recomputed in backward): the same
    log-probs and gradients as one pass over all 200, and no moment when all their logits live."""
    from pathlib import Path

    from torch.distributed._tools.mod_tracker import ModTracker

    import harness.policies.lm as lm

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from memory_peak import LiveTensors

    head = load_causal_lm(tiny).get_output_embeddings()
    vocab = head.weight.shape[0]
    torch.manual_seed(0)
    hidden = torch.randn(200, head.weight.shape[1], requires_grad=True)  # [T, H]
    targets = torch.randint(0, vocab, (200,))

    def logprobs_and_grads(train_head: bool):
        hidden.grad = head.weight.grad = None
        head.weight.requires_grad_(train_head)  # frozen under LoRA, trained in full fine-tuning
        with ModTracker() as modules, LiveTensors(modules, resolution=0) as live:
            logp = lm.token_logprobs(head, hidden, targets)
            logp.sum().backward()
        with torch.no_grad():  # the reference pass's way
            assert torch.equal(lm.token_logprobs(head, hidden, targets), logp.detach())
        return (logp.detach(), hidden.grad, head.weight.grad), live.peak

    (whole, _), (whole_frozen, whole_peak) = logprobs_and_grads(True), logprobs_and_grads(False)
    monkeypatch.setattr(lm, "LOGITS_AT_ONCE", 20 * vocab)
    (chunked, _), (chunked_frozen, chunked_peak) = logprobs_and_grads(True), logprobs_and_grads(False)
    for one_pass, in_chunks in zip([*whole, *whole_frozen[:2]], [*chunked, *chunked_frozen[:2]]):
        assert torch.allclose(one_pass, in_chunks, atol=1e-6)
    all_logits = 200 * vocab * 4  # bytes of [T, V] in float32
    assert whole_peak > 2 * all_logits and chunked_peak < all_logits / 2


@pytest.mark.parametrize("sharing, pad_prefixes", [("packed", True), ("packed", False), ("cache", True), ("cache", False), ("none", None)])
def test_a_batched_micro_batch_scores_each_pair_as_it_scores_alone(tiny, sharing, pad_prefixes):
    """Pairs of different lengths in one micro-batch (padding on both sides of the prefix cache)
    give the log-probs each gets alone, which equal the plain full forward's."""
    trainer = _trainer("srpo", tiny, "/tmp/unused")
    tokenizer = load_tokenizer(tiny)
    model = load_causal_lm(tiny).eval()
    pairs = trainer._encode(ROWS, tokenizer)
    assert len({len(p.sequence("chosen")[0][0]) for p in pairs}) > 1  # the articles differ in length: padding is exercised
    scorer = SequenceScorer(model, tokenizer.pad_token_id, sharing, pad_prefixes)
    keys = trainer.method.needs
    with torch.no_grad():
        together = scorer(pairs=pairs, keys=keys)
        for i, pair in enumerate(pairs):
            alone = scorer(pairs=[pair], keys=keys)
            for key in keys:
                ctx, comp = pair.sequence(key)
                plain = _full_forward_logprob(model, sum(ctx, []), comp)
                assert together.sums[key][i].item() == pytest.approx(alone.sums[key][0].item(), abs=1e-4)
                assert together.sums[key][i].item() == pytest.approx(plain.item(), abs=1e-4)
                assert together.counts[key][i].item() == len(comp)


def _assert_scored_as_full_forwards(model, tokenizer, pairs, keys, sharing, pad_prefixes) -> None:
    """Every sequence of ``pairs``, scored with ``sharing``, as the plain full forward scores it alone."""
    with torch.no_grad():
        scored = SequenceScorer(model, tokenizer.pad_token_id, sharing, pad_prefixes)(pairs=pairs, keys=keys)
        for i, pair in enumerate(pairs):
            for key in keys:
                ctx, comp = pair.sequence(key)
                assert scored.sums[key][i].item() == pytest.approx(_full_forward_logprob(model, sum(ctx, []), comp).item(), abs=1e-4)


class _PreviousFirst(XSum):
    """A task whose revision prompt opens with the previous completion: nothing comes before it to share."""

    @property
    def revision_template(self) -> str:  # type: ignore[override]
        return "${previous}\nBelow is a news ARTICLE and an EXAMPLE SUMMARY above it.\nARTICLE: ${article}\nTL;DR:"


@pytest.mark.parametrize("sharing, pad_prefixes", [("packed", True), ("packed", False), ("cache", True), ("cache", False), ("none", None)])
def test_a_revision_prompt_that_opens_with_the_previous_completion_scores_as_the_full_forward(tiny, sharing, pad_prefixes):
    """With no text before the in-context completion the revision prompt has no prefix to share
    (raw prompts of a plugin task may open with ${previous}): each revision context is then one
    segment of its own, and every path scores it as the plain full forward does."""
    trainer = _trainer("srpo", tiny, "/tmp/unused", task=_PreviousFirst())
    tokenizer = load_tokenizer(tiny)
    model = load_causal_lm(tiny).eval()
    pairs = trainer._encode(ROWS[:2], tokenizer)
    keys = trainer.method.needs
    assert all(len(p.sequence(k)[0]) == 1 for p in pairs for k in keys if "|" in k)  # the case under test: no shared part before the revision
    _assert_scored_as_full_forwards(model, tokenizer, pairs, keys, sharing, pad_prefixes)


@pytest.mark.parametrize("task", [None, _PreviousFirst()], ids=["xsum", "a revision template that opens with the previous completion"])
@pytest.mark.parametrize("sharing, pad_prefixes", [("packed", True), ("cache", False)])
def test_every_context_of_a_raw_prompt_starts_with_the_bos_its_tokenizer_puts_before_a_text(tiny_bos, task, sharing, pad_prefixes):
    """Llama's and Gemma's tokenizers put a BOS before any text, and TRL's DPOTrainer, vLLM and
    llama.cpp's server keep it before a raw prompt: each of SRPO's six contexts starts with exactly
    one, and shared prefixes score as the full forward does (with nothing before the previous
    completion, the BOS alone is the revision contexts' shared prefix)."""
    trainer = _trainer("srpo", tiny_bos, "/tmp/unused", task=task)
    tokenizer = load_tokenizer(tiny_bos)
    model = load_causal_lm(tiny_bos).eval()
    pairs = trainer._encode(ROWS[:2], tokenizer)
    keys = trainer.method.needs
    contexts = [sum(pair.sequence(key)[0], []) for pair in pairs for key in keys]
    assert all(c[0] == tokenizer.bos_token_id and c.count(tokenizer.bos_token_id) == 1 for c in contexts)
    _assert_scored_as_full_forwards(model, tokenizer, pairs, keys, sharing, pad_prefixes)


class _NewlineBeforePrevious(XSum):
    """A task whose revision prompt puts the previous completion on a line of its own."""

    @property
    def revision_template(self) -> str:  # type: ignore[override]
        return "Below is a news ARTICLE and an EXAMPLE SUMMARY.\nARTICLE: ${article}\nEXAMPLE SUMMARY:\n${previous}\nTL;DR:"


@pytest.mark.parametrize("task", [None, _NewlineBeforePrevious()], ids=["xsum", "the previous completion on a line of its own"])
def test_every_sequence_is_the_one_text_generation_reads_however_its_tokenizer_starts_a_text(tiny_spm, task):
    """Tokenized apart, a revision prompt's in-context part would open as a text opens: a
    SentencePiece-style tokenizer (Llama 2's) puts "▁" before its first word, or before the newline
    it starts with, which the same characters inside the prompt do not have. Each context is the
    tokens the generation engine reads (BOS, the prompt as one text), each completion what follows
    it in one text, and the prompt and the revision prefix are still shared by the sequences that
    start with them."""
    from harness.prompting import leading_tokens

    trainer = _trainer("srpo", tiny_spm, "/tmp/unused", task=task)
    tokenizer = load_tokenizer(tiny_spm)
    formatter = PromptFormatter(trainer.inputs.task, tokenizer)
    lead, ids = leading_tokens(tokenizer, templated=False), lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    pairs = trainer._encode(ROWS[:3], tokenizer)
    keys = trainer.method.needs
    for row, pair in zip(ROWS, pairs):
        for key in keys:
            side, in_context = (key.split("|") + [None])[:2]
            context = formatter.prompt(row) if in_context is None else formatter.revision_prompt(row, row[in_context])
            segments, completion = pair.sequence(key)
            assert sum(segments, []) == lead + ids(context)  # as the transformers engine feeds it
            assert sum(segments, []) + completion[:-1] == lead + ids(context + formatter.completion(row[side]))
        assert len({tuple(pair.sequence(k)[0][0]) for k in keys}) == 2  # the prompt and the revision prefix
    _assert_scored_as_full_forwards(load_causal_lm(tiny_spm).eval(), tokenizer, pairs, keys, "packed", True)


def test_a_prompts_lead_is_what_its_tokenizer_puts_before_a_text_and_never_after(tiny, tiny_bos):
    from tokenizers.processors import TemplateProcessing

    from harness.prompting import leading_tokens

    plain, llama = load_tokenizer(tiny), load_tokenizer(tiny_bos)
    bos, eos = llama.bos_token_id, llama.eos_token_id
    assert leading_tokens(plain, templated=False) == []  # SmolLM2's and Qwen's put nothing
    assert leading_tokens(llama, templated=False) == [bos] and leading_tokens(llama, templated=True) == []  # a chat template writes its own
    llama.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A <|endoftext|>", special_tokens=[("<s>", bos), ("<|endoftext|>", eos)])
    assert llama("a")["input_ids"][-1] == eos and leading_tokens(llama, templated=False) == [bos]  # an EOS after a text never enters a prompt


@pytest.mark.parametrize("sharing, pad_prefixes, decoder_calls", [("packed", True, lambda prefixes: 1), ("packed", False, lambda prefixes: prefixes),
                                                                  ("cache", True, lambda prefixes: 2), ("cache", False, lambda prefixes: 2 * prefixes),
                                                                  ("none", None, lambda prefixes: 1)],
                         ids=["packed, padded rows (accelerators)", "packed, a row at a time (CPUs)", "KV cache, padded prefixes (accelerators)",
                              "KV cache, a prefix at a time (CPUs)", "no prefix sharing"])  # fmt: skip
def test_a_micro_batch_is_a_fixed_number_of_forwards_however_many_pairs(tiny, sharing, pad_prefixes, decoder_calls):
    """What made the first GPU run launch-bound: a Python loop of small forwards, one per pair.
    On an accelerator (padded rows or prefixes) a micro-batch is one forward packed, or one of its
    prefixes and one of its continuations through the KV cache, whatever its size; the LM head
    runs once over every completion token."""
    trainer = _trainer("srpo", tiny, "/tmp/unused")
    tokenizer = load_tokenizer(tiny)
    model = load_causal_lm(tiny).eval()
    scorer = SequenceScorer(model, tokenizer.pad_token_id, sharing, pad_prefixes)
    calls = {"decoder": 0, "head": 0}
    model.get_decoder().register_forward_hook(lambda *_: calls.__setitem__("decoder", calls["decoder"] + 1))
    model.get_output_embeddings().register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1))
    pairs = trainer._encode(ROWS, tokenizer)
    for n in (1, len(pairs)):
        calls.update(decoder=0, head=0)
        with torch.no_grad():
            scorer(pairs=pairs[:n], keys=trainer.method.needs)
        prefixes = len({tuple(p.sequence(key)[0][0]) for p in pairs[:n] for key in trainer.method.needs})  # distinct first segments
        assert calls == {"decoder": decoder_calls(prefixes), "head": 1}, (n, prefixes)


def test_gradient_checkpointing_keeps_prefix_sharing_and_the_same_losses(tiny, tmp_path, monkeypatch, own_precision):
    """Under gradient checkpointing transformers turns the KV cache off; the packed shared-prefix
    mask still computes each prefix once, and the run logs the losses of a run without
    checkpointing that shares prefixes through the KV cache."""
    packed = []
    real = SequenceScorer._packed
    monkeypatch.setattr(SequenceScorer, "_packed", lambda self, *a: packed.append(1) or real(self, *a))
    runs = {}
    for checkpointing in (False, True):
        out = tmp_path / str(checkpointing)
        options = {"gradient_checkpointing": True} if checkpointing else {"prefix_sharing": "cache"}
        _trainer("srpo", tiny, out, epochs=2, lora_dropout=0.0, bf16=False, **options).train()  # float32 on a GPU too: bf16 rounding would exceed rel 1e-3
        runs[checkpointing] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert bool(packed) == checkpointing
    assert len(runs[True]) == len(runs[False]) == 4
    for plain, checkpointed in zip(runs[False], runs[True]):
        assert checkpointed["loss"] == pytest.approx(plain["loss"], rel=1e-3)
        assert checkpointed["margin"] == pytest.approx(plain["margin"], rel=1e-3, abs=1e-5)


def test_checkpointing_follows_the_device_unless_set(tiny, monkeypatch):
    """"auto" recomputes activations where training runs on a GPU (TRL's default; memory binds
    there) and not on a CPU; prefix_sharing "cache" reads the KV cache, which checkpointing turns
    off, so "auto" leaves it off there. The trainer reads the setting, not the word "auto"."""
    from harness.training.trainer import _wrap_model

    def checkpointed(**options) -> bool:
        return _wrap_model(load_causal_lm(tiny), TrainConfig(**options), autocast=False).is_gradient_checkpointing

    assert not checkpointed() and checkpointed(gradient_checkpointing=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert checkpointed() and not checkpointed(gradient_checkpointing=False) and not checkpointed(prefix_sharing="cache")


def test_the_micro_batch_follows_the_device_unless_set():
    """One pair per forward on a CPU; on an accelerator up to 8, evenly splitting each process's
    share of the batch (a micro-batch per process must exist, or the step would be dropped)."""
    assert TrainConfig(batch_size=8).micro_batch("cpu", 1) == 1
    assert TrainConfig(batch_size=8).micro_batch("cuda", 1) == 8
    assert TrainConfig(batch_size=128).micro_batch("cuda", 1) == 8  # the paper's batch, accumulated
    assert TrainConfig(batch_size=6).micro_batch("cuda", 1) == 6
    assert TrainConfig(batch_size=8).micro_batch("cuda", 2) == 4
    assert TrainConfig(batch_size=12).micro_batch("cuda", 8) == 1  # 12 pairs do not split over 8 processes
    assert TrainConfig(batch_size=8, micro_batch_size=2).micro_batch("cuda", 1) == 2


def test_running_out_of_accelerator_memory_says_what_to_lower_and_keeps_the_checkpoint(tiny, tmp_path, monkeypatch):
    """torch's out-of-memory error mid-run becomes one message naming the setting to lower; the
    steps checkpointed before it stay, and the rerun resumes after them."""
    from harness.errors import HarnessError

    real, calls = Trainer.micro_step, []

    def micro_step(self, *args, **kwargs):
        calls.append(1)
        if out_of_memory_at == len(calls):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "micro_step", micro_step)
    out_of_memory_at = 3  # batch 2, a pair per forward: the first forward of step 2
    with pytest.raises(HarnessError) as info:
        _trainer("dpo", tiny, tmp_path, epochs=1, checkpoint_every=1, micro_batch_size=1, gradient_checkpointing=False).train()  # off on a GPU too
    assert str(info.value) == ("out of accelerator memory in training step 2 with 1 pair(s) per forward: try a lower --train-arg max_completion_tokens "
                               "or --task-arg max_source_tokens or --train-arg gradient_checkpointing=true; a rerun resumes after the last checkpoint")  # fmt: skip
    calls.clear()
    out_of_memory_at = None
    result = _trainer("dpo", tiny, tmp_path, epochs=1, checkpoint_every=1, micro_batch_size=1, gradient_checkpointing=False).train()
    assert len(calls) == 2  # step 2 alone: step 1 came from the checkpoint
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] == list(range(1, result.steps + 1))
    calls.clear()
    out_of_memory_at = 1
    with pytest.raises(HarnessError, match=r"with 2 pair\(s\) per forward: try --train-arg micro_batch_size=1 or --train-arg gradient_checkpointing=true;"):
        _trainer("dpo", tiny, tmp_path / "two", epochs=1, micro_batch_size=2, gradient_checkpointing=False).train()
    calls.clear()
    with pytest.raises(HarnessError, match=r"with 2 pair\(s\) per forward: try --train-arg micro_batch_size=1;"):  # checkpointing is on already
        _trainer("dpo", tiny, tmp_path / "checkpointed", epochs=1, micro_batch_size=2, gradient_checkpointing=True).train()
