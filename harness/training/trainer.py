"""The shared trainer: any method (or SFT) on any causal LM, LoRA or full, one or many processes.

The method says which log-probabilities it needs; the trainer computes exactly those (sharing
prompt prefixes, see ``harness/policies/lm.py``), takes the reference log-probabilities from a
cache computed once per dataset, and hands both to the method's pure loss. Distribution comes
from ``accelerate``: ``accelerate launch`` with DDP or FSDP runs this code unchanged; each
process takes every world-th micro-batch of a step, and gradients are averaged over the step.

Everything a run reads is one frozen ``TrainInputs``; its hash keys the stage record, the cached
reference log-probabilities and the checkpoints, so nothing is reused for other inputs. Data order
is a seeded permutation per epoch, so a resumed run replays the same batches. A loss that turns
non-finite stops the run with a clear error instead of saving a broken adapter.
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.config import stable_hash
from harness.datasources import Rows
from harness.errors import HarnessError
from harness.method import LogProbs, Method
from harness.models import ModelRef, adapted_layers, load_causal_lm, load_tokenizer, positions
from harness.policies.lm import EncodedPair, PairEncoder, SequenceScorer
from harness.prompting import PromptFormatter
from harness.store import JsonlLog, atomic_write_json
from harness.task import TextTask
from harness.training.checkpoint import load_checkpoint, load_tensors, save_checkpoint, save_tensors
from harness.training.config import TrainConfig


@dataclass(frozen=True)
class TrainInputs:
    """What one training run reads, and nothing else: its hash is the run's key."""

    method: Method  # the loss and its options
    config: TrainConfig  # this method's trainer options
    task: TextTask  # formats the prompts (its options: templates, token budget)
    model: ModelRef  # the base model: the policy's start and the reference
    rows: Rows  # the training pairs (or SFT rows)
    seed: int  # data order, initialisation, dropout


@dataclass
class TrainResult:
    output_dir: str  # holds adapter/ (or model/), metrics.jsonl, reference_logps.pt, result.json
    model_dir: str  # what generation loads: the adapter folder (LoRA) or the full model
    base_model: str  # the model the adapter applies to
    steps: int
    final_loss: float
    seconds: float


def saved_model(output_dir: Path, config: TrainConfig, merged: bool = False) -> Path:
    """Where a training run in ``output_dir`` leaves its model: the LoRA adapter, or with
    ``merged`` base and adapter merged into one model; every weight in full fine-tuning."""
    if not config.lora:
        return output_dir / "model"
    return output_dir / ("merged" if merged else "adapter")


def build_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    from harness.distributed import state

    state()  # forms the process group the same way every stage sees it
    return Accelerator(mixed_precision="bf16" if config.uses_bf16() else "no", cpu=not torch.cuda.is_available())


def _wrap_model(model, config: TrainConfig, autocast: bool):
    """The model to train: checkpointing as configured, LoRA adapters where asked (``autocast``: every
    training forward runs under bf16 autocast)."""
    if config.uses_checkpointing():  # transformers renamed it in 5.2x; the old name warns
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model.config.use_cache = False
    if not config.lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, task_type="CAUSAL_LM",
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
    )  # fmt: skip
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:  # peft names the modules it could not find
        raise HarnessError(f"train option lora_target_modules={targets!r} does not fit this model: {str(exc).splitlines()[0][:300]}") from None
    if autocast:
        # peft copies every adapter's input to the adapters' float32, and autocast casts it straight
        # back to bf16 for the matmul: a round trip that changes no value (but dropout's scaling,
        # then done in bf16) and keeps one more copy of each LoRA input for backward (four layers of
        # the 1B shape, 8 pairs, dropout 0.05: 2.37 GB of activations, 1.97 GB without;
        # benchmarks/memory_peak.py). The flag is peft's own (its helper disable_input_dtype_casting
        # sets it); the reference pass runs with the adapters disabled, so every forward through
        # them is under autocast.
        for layer in adapted_layers(model):
            layer.cast_input_dtype_enabled = False
    return model


class Trainer:
    def __init__(self, inputs: TrainInputs, output_dir: Path):
        self.inputs, self.output_dir = inputs, Path(output_dir)
        self.method, self.config, self.task = inputs.method, inputs.config, inputs.task
        self.base_model, self.seed = inputs.model.path, inputs.seed
        self.key = stable_hash(inputs)

    # -- set-up ----------------------------------------------------------------------------------
    def _encode(self, rows, tokenizer) -> list[EncodedPair]:
        formatter = PromptFormatter(self.task, tokenizer, self.config.prompt_format)
        encoder = PairEncoder(formatter, self.method.needs, self.config.max_completion_tokens)
        chunk = 256  # pairs a tokenizer call: the cores busy, the texts in memory few
        return [pair for first in range(0, len(rows), chunk) for pair in encoder.encode(rows[first : first + chunk], first)]

    def _schedule(self, n_pairs: int, world: int, micro_size: int) -> list[list[list[int]]]:
        """Per optimizer step, the micro-batches (lists of pair indices) in order, all epochs."""
        c = self.config
        steps = []
        for epoch in range(c.epochs):
            order = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch)).tolist()
            for start in range(0, n_pairs, c.batch_size):
                chunk = order[start : start + c.batch_size]
                micro = [chunk[i : i + micro_size] for i in range(0, len(chunk), micro_size)]
                if len(micro) >= world:  # a tail smaller than one micro-batch per process is dropped
                    steps.append(micro)
        if c.max_steps:
            steps = (steps * math.ceil(c.max_steps / max(len(steps), 1)))[: c.max_steps]
        if not steps:
            raise HarnessError(f"{n_pairs} pairs make no optimizer step with batch_size {c.batch_size} on {world} process(es)")
        return steps

    # -- reference log-probs, once per dataset ---------------------------------------------------
    @torch.no_grad()
    def reference_logprobs(self, scorer: SequenceScorer, pairs: list[EncodedPair], batch_size: int = 1) -> LogProbs:
        """log pi_ref for every pair and needed sequence, with LoRA adapters disabled (so the
        reference is the base model, not a second copy) or, in full fine-tuning, before any step.
        Computed on the model's device; kept on the CPU (one float per pair and key)."""
        model = scorer.model
        was_training = model.training
        model.eval()
        context = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
        sums = {k: [] for k in self.method.needs}
        counts = {k: [] for k in self.method.needs}
        with context:
            for start in tqdm(range(0, len(pairs), batch_size), desc="reference log-probs", unit="batch", leave=False):
                lp = scorer(pairs=pairs[start : start + batch_size], keys=self.method.needs)
                for k in self.method.needs:
                    sums[k].append(lp.sums[k].float().cpu())
                    counts[k].append(lp.counts[k].float().cpu())
        model.train(was_training)
        return LogProbs({k: torch.cat(v) for k, v in sums.items()}, {k: torch.cat(v) for k, v in counts.items()})

    def _cached_reference(self, scorer, pairs, accelerator, micro_size: int) -> LogProbs | None:
        if not self.method.uses_reference:
            return None
        key = stable_hash([self.key, "reference"])
        path = self.output_dir / "reference_logps.pt"
        with accelerator.main_process_first():  # the main process computes, the others read its file
            saved = load_tensors(path)
            if saved is not None and saved.get("key") == key:
                return LogProbs(saved["sums"], saved["counts"])
            with _explaining_oom("the reference pass", micro_size, self.config, accelerator.num_processes):
                logps = self.reference_logprobs(scorer, pairs, micro_size)
            if accelerator.is_main_process:
                tmp = path.with_suffix(".partial")
                save_tensors({"key": key, "sums": logps.sums, "counts": logps.counts}, tmp)
                tmp.replace(path)
        return logps

    # -- the loop --------------------------------------------------------------------------------
    def pair_losses(self, scorer, batch: list[EncodedPair], reference: LogProbs | None):
        """The method's per-pair losses [B] and metrics on the policy's log-probs of ``batch``."""
        return self.method.loss(scorer(pairs=batch, keys=self.method.needs), reference)

    def micro_step(self, scorer, pairs: list[EncodedPair], indices: list[int], reference: LogProbs | None, device, backward) -> tuple:
        """One micro-batch: its cached reference log-probs moved to ``device``, the policy's, the
        method's losses, and ``backward`` of their share of the step's mean. Every tensor the loss
        reads lives on the model's device (tests/test_devices.py checks it on the meta device)."""
        ref = _select(reference, indices, device) if reference is not None else None
        per_pair, metrics = self.pair_losses(scorer, [pairs[j] for j in indices], ref)
        backward(per_pair.mean())
        return per_pair, metrics

    def train(self) -> TrainResult:
        with _deterministic_kernels(self.config.deterministic):
            result = self._train()
        # Under mixed precision accelerate wraps the scorer's forward in a bound method stored on the
        # scorer: a reference cycle, which keeps the trained model and its optimizer state on the
        # accelerator until the collector runs, through the next method's training and generation.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return result

    def _train(self) -> TrainResult:
        c = self.config
        started = time.time()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        accelerator = build_accelerator(c)
        from accelerate.utils import set_seed

        set_seed(self.seed)
        tokenizer = load_tokenizer(self.base_model)
        # LoRA on a GPU: the frozen base in bfloat16 (half the memory and bandwidth), the adapters
        # and their optimizer state in float32 (peft keeps adapter weights float32), as PEFT and
        # TRL users expect. Full fine-tuning keeps float32 master weights under bf16 autocast.
        autocast = accelerator.mixed_precision == "bf16"
        base_dtype = "bfloat16" if c.lora and autocast else "float32"
        model = _wrap_model(load_causal_lm(self.base_model, base_dtype), c, autocast)
        scorer = SequenceScorer(model, tokenizer.pad_token_id, c.prefix_sharing)
        pairs = self._encode(self.inputs.rows.items, tokenizer)
        _check_positions(pairs, self.method.needs, model)

        world, rank = accelerator.num_processes, accelerator.process_index
        micro_size = c.micro_batch(accelerator.device.type, world)
        schedule = self._schedule(len(pairs), world, micro_size)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=c.lr, betas=(c.adam_beta1, c.adam_beta2), weight_decay=c.weight_decay)
        scheduler = self._scheduler(optimizer, len(schedule))
        scorer, optimizer = accelerator.prepare(scorer, optimizer)  # the model is on its device from here on
        reference = self._cached_reference(accelerator.unwrap_model(scorer), pairs, accelerator, micro_size)
        checkpoint_dir = self.output_dir / "checkpoint"
        start = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, self.key) or 0
        metrics = JsonlLog(self.output_dir / "metrics.jsonl")
        if accelerator.is_main_process:  # on resume, steps past the checkpoint are dropped: none is logged twice
            metrics.rewrite([m for m in metrics.read() if m["step"] <= start])
        model.train()
        quiet = {} if accelerator.is_local_main_process else {"disable": True}  # one bar per machine; an explicit False would override TQDM_DISABLE
        bar = tqdm(total=len(schedule), initial=start, desc=f"train {self.method.registered_name}", unit="step", **quiet)
        last_loss = float("nan")
        for step in range(start, len(schedule)):
            step_start = time.time()
            mine = schedule[step][rank::world]  # this process's micro-batches of the step
            losses, metric_values, tokens = [], {}, 0
            for i, micro in enumerate(mine):
                share = len(micro) / sum(map(len, mine))  # of the step's mean loss
                with _explaining_oom(f"training step {step + 1}", micro_size, c, world), _maybe_no_sync(accelerator, scorer, i == len(mine) - 1), accelerator.autocast():
                    per_pair, metric = self.micro_step(scorer, pairs, micro, reference, accelerator.device, lambda loss: accelerator.backward(loss * share))
                losses.append(per_pair.detach().float())
                for name, value in metric.items():
                    metric_values.setdefault(name, []).append(value.detach().float())
                tokens += sum(pairs[j].n_tokens(self.method.needs) for j in micro)
            step_losses = accelerator.gather_for_metrics(torch.cat(losses))
            self._stop_if_diverged(step_losses, step, scheduler.get_last_lr()[0], start)
            if c.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, c.max_grad_norm)
            step_lr = scheduler.get_last_lr()[0]  # the rate this step used
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_tokens = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum").item()
            record = {"step": step + 1, "loss": step_losses.mean().item(), "lr": step_lr,
                      "pairs": int(step_losses.numel()), "tokens": int(step_tokens), "processes": world,
                      "seconds": round(time.time() - step_start, 4)}  # fmt: skip
            for name, values in metric_values.items():
                record[name] = accelerator.gather_for_metrics(torch.cat(values)).mean().item()
            last_loss = record["loss"]
            if accelerator.is_main_process:
                metrics.append([record])
                done = step + 1
                if c.checkpoint_every and done % c.checkpoint_every == 0 and done < len(schedule):
                    save_checkpoint(checkpoint_dir, accelerator.unwrap_model(scorer).model, optimizer, scheduler, done, self.key)
            accelerator.wait_for_everyone()
            bar.set_postfix({k: f"{record[k]:.4g}" for k in ("loss", "margin", "accuracy") if k in record})
            bar.update(1)
        bar.close()
        if not all(torch.isfinite(p).all() for p in trainable):
            self._stop_if_diverged(torch.tensor([float("nan")]), len(schedule) - 1, scheduler.get_last_lr()[0], start, "its weights")
        return self._save(accelerator, scorer, tokenizer, len(schedule), last_loss, time.time() - started)

    def _stop_if_diverged(self, losses: torch.Tensor, step: int, lr: float, resumed_at: int, what: str = "its loss") -> None:
        """A non-finite loss or weight ends the run here, before it is saved or generates from."""
        if torch.isfinite(losses).all():
            return
        kept = f"the checkpoint at step {resumed_at} is kept" if resumed_at else "nothing was saved"
        raise HarnessError(
            f"training {self.method.registered_name!r} diverged at step {step + 1}: {what} became non-finite "
            f"(lr {lr:.3g}, method options {asdict(self.method)}); {kept}. Lower the learning rate (--train-arg lr=...) "
            f"or check the method's options"
        )

    def _scheduler(self, optimizer, total: int):
        from transformers import get_scheduler

        c = self.config
        warmup = c.warmup_steps or int(round(c.warmup_ratio * total))
        if c.schedule == "constant":
            return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup)
        return get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=warmup, num_training_steps=total,
                             scheduler_specific_kwargs={"min_lr_rate": c.min_lr_ratio})  # fmt: skip

    def _save(self, accelerator, scorer, tokenizer, steps: int, final_loss: float, seconds: float) -> TrainResult:
        model = accelerator.unwrap_model(scorer).model
        c = self.config
        model_dir = saved_model(self.output_dir, c)
        if accelerator.is_main_process:
            tmp = model_dir.with_name(model_dir.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)  # PEFT format for LoRA: loadable by PeftModel.from_pretrained and vLLM
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(model_dir, ignore_errors=True)
            tmp.rename(model_dir)
            if c.lora and c.merge_adapter:
                merged = saved_model(self.output_dir, c, merged=True)
                shutil.rmtree(merged, ignore_errors=True)
                model.merge_and_unload().save_pretrained(merged)
                tokenizer.save_pretrained(merged)
            shutil.rmtree(self.output_dir / "checkpoint", ignore_errors=True)
        accelerator.wait_for_everyone()
        result = TrainResult(str(self.output_dir), str(model_dir), self.base_model, steps, final_loss, round(seconds, 2))
        if accelerator.is_main_process:
            atomic_write_json(self.output_dir / "result.json", asdict(result))
        return result


def _check_positions(pairs: list[EncodedPair], keys: tuple[str, ...], model) -> None:
    """Every sequence fits the model's ``positions``, before the reference pass and the first step."""
    limit = positions(model)
    longest = max((pair.n_tokens([k]) for pair in pairs for k in keys), default=0)
    if limit and longest > limit:
        raise HarnessError(f"training sequences of up to {longest} tokens run past the model's {limit} positions: lower --task-arg "
                           "max_source_tokens (--train-task-arg with --train-task) or --train-arg max_completion_tokens")  # fmt: skip


def _select(logps: LogProbs, indices: list[int], device: torch.device) -> LogProbs:
    """The cached log-probs of the pairs ``indices``, on the device of the policy's log-probs."""
    idx = torch.tensor(indices)
    return LogProbs({k: v[idx].to(device) for k, v in logps.sums.items()}, {k: v[idx].to(device) for k, v in logps.counts.items()})


@contextmanager
def _deterministic_kernels(deterministic: bool):
    """With ``deterministic``, PyTorch's deterministic kernels for this training only (an op that has
    none warns), as PyTorch's reproducibility notes advise: on a GPU, atomics (index_add, attention's
    backward) otherwise add in another order each run, so two runs, or a resumed run and an
    uninterrupted one, drift apart. cuBLAS reads its workspace setting when a process first uses it:
    set CUBLAS_WORKSPACE_CONFIG yourself if something ran on the GPU before the training."""
    if not deterministic:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _maybe_no_sync(accelerator, model, sync: bool):
    return nullcontext() if sync or accelerator.num_processes == 1 else accelerator.no_sync(model)


@contextmanager
def _explaining_oom(where: str, micro_size: int, config: TrainConfig, world: int = 1):
    """An accelerator running out of memory is the settings against the card, not a bug: say which
    setting to lower. Checkpointed steps stay, and a rerun resumes after the last one."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        smaller = config.even_micro_batch(micro_size - 1, world) if micro_size > 1 else None
        advice = [f"--train-arg micro_batch_size={smaller}"] if smaller else ["a lower --train-arg max_completion_tokens or --task-arg max_source_tokens"]
        if not config.uses_checkpointing():
            advice.append("--train-arg gradient_checkpointing=true")
        raise HarnessError(f"out of accelerator memory in {where} with {micro_size} pair(s) per forward: try {' or '.join(advice)}; "
                           "a rerun resumes after the last checkpoint") from None  # fmt: skip
