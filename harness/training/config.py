"""Training options: one dataclass, each field the paper's value or TRL's default, said beside it."""

from __future__ import annotations

from dataclasses import dataclass

from harness.plugin import Plugin

SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig(Plugin):
    """Optimisation, LoRA and memory options of the trainer (``--train-arg KEY=VALUE``)."""

    lr: float = 2e-6  # peak learning rate (Sec. 6: SRPO/IPO 2e-6, DPO 1e-6; Appendix D: 1.25e-6)
    epochs: int = 1  # passes over the pairs (Sec. 6: 5; Appendix D: 1)
    max_steps: int = 0  # optimizer steps; 0 lets ``epochs`` decide
    batch_size: int = 8  # effective pairs per optimizer step, over processes and accumulation (paper: 128 / 32)
    micro_batch_size: int = 1  # pairs per forward pass; accumulation makes up the rest
    schedule: str = "cosine"  # "constant" (Sec. 6's DPO) or "cosine" (Appendix D), both after warm-up
    warmup_steps: int = 0  # linear warm-up (Sec. 6: 150; Appendix D: 128); overrides warmup_ratio
    warmup_ratio: float = 0.0  # warm-up as a fraction of all steps (Sec. 6's SFT: 0.03)
    min_lr_ratio: float = 0.0  # cosine decays to lr * this (Appendix D: 0.1, 1.25e-6 -> 1.25e-7)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (Sec. 6: 0.1)
    adam_beta1: float = 0.9  # (Sec. 6 and Appendix D)
    adam_beta2: float = 0.999  # (Sec. 6 and Appendix D)
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables
    lora: bool = True  # LoRA adapters through peft; False trains every weight
    lora_r: int = 16  # LoRA rank (the paper: TRL's PEFT defaults, r 16)
    lora_alpha: int = 32  # LoRA scaling alpha (the paper: 32)
    lora_dropout: float = 0.05  # TRL's default
    lora_target_modules: str = "all-linear"  # peft's shorthand, or comma-separated module names
    gradient_checkpointing: bool = False  # trade compute for memory (disables prefix sharing: no KV cache)
    bf16: str = "auto"  # bf16 autocast: "auto" where the accelerator supports it, "yes" or "no"
    share_prefixes: bool = True  # compute each shared prompt prefix once (see harness/policies/lm.py)
    max_completion_tokens: int = 256  # longer completions are cut for training
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints; 0: none
    merge_adapter: bool = False  # also save base + adapter merged into one model
    prompt_format: str = "auto"  # "auto" (chat template for chat tasks), "raw" or "chat"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.bf16 not in ("auto", "yes", "no"):
            raise ValueError(f"bf16 must be auto, yes or no, got {self.bf16!r}")
        if self.batch_size < 1 or self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a positive multiple of micro_batch_size ({self.micro_batch_size})")
        if self.lr <= 0 or self.epochs < 1 or self.max_steps < 0:
            raise ValueError("lr must be positive, epochs at least 1 and max_steps non-negative")
