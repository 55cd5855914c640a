"""The shared trainer: any method (or SFT) on any causal LM, LoRA or full, one or many processes.

The method says which log-probabilities it needs; the trainer computes exactly those (sharing
prompt prefixes, see ``harness/policies/lm.py``), takes the reference log-probabilities from a
cache computed once per dataset, and hands both to the method's pure loss. Distribution comes
from ``accelerate``: ``accelerate launch`` with DDP or FSDP runs this code unchanged; each
process takes every world-th micro-batch of a step, and gradients are averaged over the step.

Data order is a seeded permutation per epoch, so a resumed run replays the same batches.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.config import stable_hash
from harness.errors import HarnessError
from harness.method import LogProbs, Method
from harness.models import load_causal_lm, load_tokenizer
from harness.policies.lm import EncodedPair, PairEncoder, SequenceScorer
from harness.prompting import PromptFormatter
from harness.store import atomic_write_json
from harness.task import TextTask
from harness.training.checkpoint import load_checkpoint, save_checkpoint
from harness.training.config import TrainConfig


@dataclass
class TrainResult:
    output_dir: str  # holds adapter/ (or model/), metrics.jsonl, reference_logps.pt, result.json
    model_dir: str  # what generation loads: the adapter folder (LoRA) or the full model
    base_model: str  # the model the adapter applies to
    steps: int
    final_loss: float
    seconds: float


def build_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    from harness.distributed import state

    state()  # forms the process group the same way every stage sees it
    use_bf16 = config.bf16 == "yes" or (config.bf16 == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=not torch.cuda.is_available())


def _wrap_model(model, config: TrainConfig):
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if not config.lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, task_type="CAUSAL_LM",
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
    )  # fmt: skip
    return get_peft_model(model, lora)


class Trainer:
    def __init__(self, method: Method, config: TrainConfig, task: TextTask, base_model: str, output_dir: Path, seed: int = 0):
        self.method, self.config, self.task = method, config, task
        self.base_model, self.output_dir, self.seed = base_model, Path(output_dir), seed

    # -- set-up ----------------------------------------------------------------------------------
    def _encode(self, rows: list[dict], tokenizer) -> list[EncodedPair]:
        formatter = PromptFormatter(self.task, tokenizer, self.config.prompt_format)
        encoder = PairEncoder(formatter, self.method.needs, self.config.max_completion_tokens)
        return [encoder.encode(row, i) for i, row in enumerate(rows)]

    def _schedule(self, n_pairs: int, world: int) -> list[list[list[int]]]:
        """Per optimizer step, the micro-batches (lists of pair indices) in order, all epochs."""
        c = self.config
        steps = []
        for epoch in range(c.epochs):
            order = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch)).tolist()
            for start in range(0, n_pairs, c.batch_size):
                chunk = order[start : start + c.batch_size]
                micro = [chunk[i : i + c.micro_batch_size] for i in range(0, len(chunk), c.micro_batch_size)]
                if len(micro) >= world:  # a tail smaller than one micro-batch per process is dropped
                    steps.append(micro)
        if c.max_steps:
            steps = (steps * math.ceil(c.max_steps / max(len(steps), 1)))[: c.max_steps]
        if not steps:
            raise HarnessError(f"{n_pairs} pairs make no optimizer step with batch_size {c.batch_size} on {world} process(es)")
        return steps

    def _run_key(self, rows: list[dict]) -> str:
        return stable_hash({"method": type(self.method).__name__, "options": asdict(self.method), "train": asdict(self.config),
                            "rows": stable_hash(rows), "model": self.base_model, "seed": self.seed, "task": self.task.registered_name})  # fmt: skip

    # -- reference log-probs, once per dataset ---------------------------------------------------
    @torch.no_grad()
    def reference_logprobs(self, scorer: SequenceScorer, pairs: list[EncodedPair]) -> LogProbs:
        """log pi_ref for every pair and needed sequence, with LoRA adapters disabled (so the
        reference is the base model, not a second copy) or, in full fine-tuning, before any step."""
        model = scorer.model
        was_training = model.training
        model.eval()
        context = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
        sums = {k: [] for k in self.method.needs}
        counts = {k: [] for k in self.method.needs}
        with context:
            for pair in tqdm(pairs, desc="reference log-probs", unit="pair", leave=False):
                lp = scorer(pairs=[pair], keys=self.method.needs)
                for k in self.method.needs:
                    sums[k].append(lp.sums[k][0].float().cpu())
                    counts[k].append(lp.counts[k][0])
        model.train(was_training)
        return LogProbs({k: torch.stack(v) for k, v in sums.items()}, {k: torch.stack(v) for k, v in counts.items()})

    def _cached_reference(self, scorer, pairs, key: str, accelerator) -> LogProbs | None:
        if not self.method.uses_reference:
            return None
        path = self.output_dir / "reference_logps.pt"
        with accelerator.main_process_first():  # the main process computes, the others read its file
            if path.exists():
                saved = torch.load(path, weights_only=False)
                if saved.get("key") == key:
                    return saved["logps"]
            logps = self.reference_logprobs(scorer, pairs)
            if accelerator.is_main_process:
                tmp = path.with_suffix(".partial")
                torch.save({"key": key, "logps": logps}, tmp)
                tmp.replace(path)
        return logps

    # -- the loop --------------------------------------------------------------------------------
    def pair_losses(self, scorer, batch: list[EncodedPair], reference: LogProbs | None):
        """The method's per-pair losses [B] and metrics on the policy's log-probs of ``batch``."""
        return self.method.loss(scorer(pairs=batch, keys=self.method.needs), reference)

    def train(self, rows: list[dict]) -> TrainResult:
        c = self.config
        started = time.time()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        accelerator = build_accelerator(c)
        from accelerate.utils import set_seed

        set_seed(self.seed)
        tokenizer = load_tokenizer(self.base_model)
        model = _wrap_model(load_causal_lm(self.base_model), c)
        scorer = SequenceScorer(model, tokenizer.pad_token_id, share_prefixes=c.share_prefixes and not c.gradient_checkpointing)
        pairs = self._encode(rows, tokenizer)
        key = self._run_key(rows)
        reference = self._cached_reference(scorer, pairs, stable_hash([key, "reference"]), accelerator)

        world, rank = accelerator.num_processes, accelerator.process_index
        schedule = self._schedule(len(pairs), world)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=c.lr, betas=(c.adam_beta1, c.adam_beta2), weight_decay=c.weight_decay)
        scheduler = self._scheduler(optimizer, len(schedule))
        checkpoint_dir = self.output_dir / "checkpoint"
        start = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, key) or 0
        scorer, optimizer = accelerator.prepare(scorer, optimizer)
        metrics_path = self.output_dir / "metrics.jsonl"
        if accelerator.is_main_process:
            _truncate_metrics(metrics_path, start)
        model.train()
        bar = tqdm(total=len(schedule), initial=start, desc=f"train {self.method.registered_name}", unit="step",
                   disable=not accelerator.is_local_main_process)  # fmt: skip
        last_loss = float("nan")
        for step in range(start, len(schedule)):
            step_start = time.time()
            mine = schedule[step][rank::world]  # this process's micro-batches of the step
            losses, metric_values, tokens = [], {}, 0
            for i, micro in enumerate(mine):
                batch = [pairs[j] for j in micro]
                ref = _select(reference, micro) if reference is not None else None
                sync = i == len(mine) - 1
                with _maybe_no_sync(accelerator, scorer, sync), accelerator.autocast():
                    per_pair, metrics = self.pair_losses(scorer, batch, ref)
                    accelerator.backward(per_pair.mean() * len(micro) / sum(map(len, mine)))
                losses.append(per_pair.detach().float())
                for name, value in metrics.items():
                    metric_values.setdefault(name, []).append(value.detach().float())
                tokens += sum(p.n_tokens(self.method.needs) for p in batch)
            if c.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, c.max_grad_norm)
            step_lr = scheduler.get_last_lr()[0]  # the rate this step used
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_losses = accelerator.gather_for_metrics(torch.cat(losses))
            step_tokens = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum").item()
            record = {"step": step + 1, "loss": step_losses.mean().item(), "lr": step_lr,
                      "pairs": int(step_losses.numel()), "tokens": int(step_tokens), "processes": world,
                      "seconds": round(time.time() - step_start, 4)}  # fmt: skip
            for name, values in metric_values.items():
                record[name] = accelerator.gather_for_metrics(torch.cat(values)).mean().item()
            last_loss = record["loss"]
            if accelerator.is_main_process:
                with metrics_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                done = step + 1
                if c.checkpoint_every and done % c.checkpoint_every == 0 and done < len(schedule):
                    save_checkpoint(checkpoint_dir, accelerator.unwrap_model(scorer).model, optimizer, scheduler, done, key)
            accelerator.wait_for_everyone()
            bar.set_postfix({k: f"{record[k]:.4g}" for k in ("loss", "margin", "accuracy") if k in record})
            bar.update(1)
        bar.close()
        return self._save(accelerator, scorer, tokenizer, len(schedule), last_loss, time.time() - started)

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
        model_dir = self.output_dir / ("adapter" if c.lora else "model")
        if accelerator.is_main_process:
            tmp = model_dir.with_name(model_dir.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)  # PEFT format for LoRA: loadable by PeftModel.from_pretrained and vLLM
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(model_dir, ignore_errors=True)
            tmp.rename(model_dir)
            if c.lora and c.merge_adapter:
                merged = self.output_dir / "merged"
                shutil.rmtree(merged, ignore_errors=True)
                model.merge_and_unload().save_pretrained(merged)
                tokenizer.save_pretrained(merged)
            shutil.rmtree(self.output_dir / "checkpoint", ignore_errors=True)
        accelerator.wait_for_everyone()
        result = TrainResult(str(self.output_dir), str(model_dir), self.base_model, steps, final_loss, round(seconds, 2))
        if accelerator.is_main_process:
            atomic_write_json(self.output_dir / "result.json", asdict(result))
        return result


def _select(logps: LogProbs, indices: list[int]) -> LogProbs:
    idx = torch.tensor(indices)
    return LogProbs({k: v[idx] for k, v in logps.sums.items()}, {k: v[idx] for k, v in logps.counts.items()})


def _truncate_metrics(path: Path, keep_steps: int) -> None:
    """On resume, drop metric lines past the checkpoint so no step is logged twice."""
    if not path.exists():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= keep_steps]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _maybe_no_sync(accelerator, model, sync: bool):
    return nullcontext() if sync or accelerator.num_processes == 1 else accelerator.no_sync(model)
