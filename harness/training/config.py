"""Training options: one dataclass, each field the paper's value or TRL's default, said beside it.

The bounds are checked when a run is resolved (pydantic, see ``harness/config.py``), before a
model loads: a value torch or peft would reject mid-run fails first, with the option's name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Literal

from pydantic import Field

from harness.config import Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt
from harness.plugin import Plugin

AdamBeta = Annotated[float, Field(ge=0, lt=1)]


@dataclass
class TrainConfig(Plugin):
    """Optimisation, LoRA and memory options of the trainer (``--train-arg KEY=VALUE``)."""

    lr: Positive = 2e-6  # peak learning rate (Sec. 6: SRPO/IPO 2e-6, DPO 1e-6; Appendix D: 1.25e-6)
    epochs: PositiveInt = 1  # passes over the pairs (Sec. 6: 5; Appendix D: 1)
    max_steps: NonNegativeInt = 0  # optimizer steps; 0 lets ``epochs`` decide
    batch_size: PositiveInt = 8  # effective pairs per optimizer step, over processes and accumulation (paper: 128 / 32)
    micro_batch_size: PositiveInt | Literal["auto"] = "auto"  # pairs per forward pass, accumulation making up the rest; "auto": 1 on a CPU, up to 8 on an accelerator (see micro_batch)
    schedule: Literal["constant", "cosine"] = "cosine"  # "constant" (Sec. 6's DPO) or "cosine" (Appendix D), both after warm-up
    warmup_steps: NonNegativeInt = 0  # linear warm-up (Sec. 6: 150; Appendix D: 128); overrides warmup_ratio
    warmup_ratio: Fraction = 0.0  # warm-up as a fraction of all steps (Sec. 6's SFT: 0.03)
    min_lr_ratio: Fraction = 0.0  # cosine decays to lr * this (Appendix D: 0.1, 1.25e-6 -> 1.25e-7)
    weight_decay: NonNegative = 0.0  # AdamW decoupled weight decay (Sec. 6: 0.1)
    adam_beta1: AdamBeta = 0.9  # (Sec. 6 and Appendix D)
    adam_beta2: AdamBeta = 0.999  # (Sec. 6 and Appendix D)
    max_grad_norm: NonNegative = 1.0  # gradient clipping; 0 disables
    lora: bool = True  # LoRA adapters through peft; False trains every weight
    lora_r: PositiveInt = 16  # LoRA rank (the paper: TRL's PEFT defaults, r 16)
    lora_alpha: Positive = 32  # LoRA scaling alpha (the paper: 32)
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05  # TRL's default
    lora_target_modules: Annotated[str, Field(min_length=1)] = "all-linear"  # peft's shorthand, or comma-separated module names
    gradient_checkpointing: bool | Literal["auto"] = "auto"  # activations recomputed in the backward pass, less memory for more compute: true, false, or "auto": on where training runs on a GPU (TRL's default; see uses_checkpointing), off on a CPU and under prefix_sharing "cache"
    bf16: bool | Literal["auto"] = "auto"  # bf16 autocast: true, false, or "auto": where the accelerator supports it
    prefix_sharing: Literal["packed", "cache", "none"] = "packed"  # how a prompt prefix shared by several sequences is computed once (harness/policies/lm.py): "packed" under a shared-prefix mask, "cache" through copies of its KV cache, "none" not at all
    max_completion_tokens: PositiveInt = 256  # longer completions are cut for training
    checkpoint_every: NonNegativeInt = 50  # optimizer steps between resumable checkpoints; 0: none
    deterministic: bool = False  # PyTorch's deterministic kernels, so that a GPU run repeats (and a resumed one ends where an uninterrupted one does) wherever PyTorch has them; slower. CPU runs repeat anyway
    merge_adapter: bool = False  # also save base + adapter merged into one model
    prompt_format: Literal["auto", "raw", "chat"] = "auto"  # "auto" (chat template for chat tasks), "raw" or "chat"

    def __post_init__(self):
        if self.micro_batch_size != "auto" and self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size ({self.micro_batch_size})")
        if self.prefix_sharing == "cache" and self.gradient_checkpointing is True:
            raise ValueError("prefix_sharing 'cache' needs the KV cache, which gradient checkpointing turns off: use 'packed'")

    def uses_bf16(self) -> bool:
        """Whether training runs under bf16 autocast on this machine."""
        import torch

        return self.bf16 is True or (self.bf16 == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())

    def uses_checkpointing(self) -> bool:
        """Whether training recomputes activations in backward on this machine. "auto": on a GPU,
        where memory binds (an H100 took SRPO at micro-batch 8 on a 1B model from 29.9 to 7.3 GB
        for 1.4x the step time); not on a CPU, where memory is ample and compute is not; not with
        prefix_sharing "cache", which reads the KV cache that checkpointing turns off."""
        import torch

        auto = self.gradient_checkpointing == "auto" and torch.cuda.is_available() and self.prefix_sharing != "cache"
        return self.gradient_checkpointing is True or auto

    def settled(self) -> TrainConfig:
        """This config with its "auto" options settled for this machine: bf16 and float32 training
        give other weights, so a run keyed by it is not reused where the other would run; and the
        key says whether activations were recomputed."""
        return replace(self, bf16=self.uses_bf16(), gradient_checkpointing=self.uses_checkpointing())

    def micro_batch(self, device_type: str, world: int) -> int:
        """``micro_batch_size``, or where it is "auto": 1 on a CPU, whose cores one sequence already
        fills; on an accelerator, where a forward of one pair waits on kernel launches, the largest
        size up to 8 (TRL's per-device default) that splits every process's share of a batch evenly."""
        if self.micro_batch_size != "auto":
            return self.micro_batch_size
        return 1 if device_type == "cpu" else self.even_micro_batch(8, world)

    def even_micro_batch(self, at_most: int, world: int) -> int:
        """The largest micro-batch up to ``at_most`` pairs that splits each of ``world`` processes'
        share of a batch evenly; 1 where none does."""
        return max((d for d in range(1, at_most + 1) if self.batch_size % (d * world) == 0), default=1)
