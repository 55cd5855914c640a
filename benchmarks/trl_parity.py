"""Whether the harness's DPO and IPO compute what TRL's DPOTrainer computes, and its SimPO what TRL's
CPOTrainer does: both trainers on the same model, pairs, LoRA initialisation, optimizer and
schedule, compared step for step.

    python benchmarks/trl_parity.py [--model smollm2-135m] [--pairs 4] [--steps 4] [--lr 5e-4]
        [--methods dpo,ipo,simpo] [--prefix-sharing packed] [--micro-batch-size 1]

For each method it prints the largest difference between the two trainers' reference log-probs
(every pair, chosen and rejected), each step's loss from both, and how far apart the trained
adapters' weight updates (B A) are relative to their norm, in the layer where they differ most.
Both train in float32 without dropout, so the numbers agree to float rounding unless the two
compute different things: other tokens scored (prompt and completion tokenised apart here,
together there; the EOS), masks, the loss, the accumulation of micro-batches (TRL takes the step's
pairs in one padded batch), the optimizer.

The data and LoRA are ``gpu.py``'s (XSum test articles cut to 320 tokens, the gold summary chosen,
another article's rejected; r16/alpha 32 on every linear layer), the learning rate constant, AdamW
without weight decay, gradients clipped at norm 1 (both trainers' defaults). The harness's IPO
runs with ``average_log_prob=true``: TRL's "ipo" loss divides each log-ratio by its completion's
tokens (the harness's default is the sum). SimPO runs through TRL's CPOTrainer (experimental):
loss_type "simpo" without CPO's NLL term (``cpo_alpha=0``). RPO has no TRL twin to compare with:
TRL's "sft" term averages the NLL over the batch's tokens, the harness's over each completion's. Needs the ``bench`` extra (TRL); ``--model`` also takes a folder, for
example a random-weight shape ``gpu.py`` built.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu  # noqa: E402  (the data, the LoRA and both trainers as gpu.py builds them)


def cpo_trainer(model: str, rows: list[dict], out: str, lora_dropout: float, **cpo):
    """TRL's CPOTrainer (``trl.experimental``) on ``gpu.trl_pairs``, all of them one optimizer step;
    ``cpo``: more ``CPOConfig`` options (loss_type "simpo" with ``cpo_alpha`` 0 is SimPO). It puts
    the tokenizer's ``bos_token`` before every prompt, where DPOTrainer and the harness put the
    special tokens the tokenizer itself puts before a text: the same for Llama's, but SmolLM2's
    names a BOS it never puts there. Such a tokenizer reaches it without one, so that both trainers
    score the same tokens."""
    from transformers import AutoModelForCausalLM
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from harness.prompting import leading_tokens

    tokenizer, data = gpu.trl_pairs(model, rows)
    if not leading_tokens(tokenizer, templated=False):
        tokenizer.bos_token = None
    args = CPOConfig(output_dir=out, per_device_train_batch_size=len(rows), report_to="none", save_strategy="no", max_length=1024,
                     use_cpu=not torch.cuda.is_available(), **cpo)  # fmt: skip
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    return CPOTrainer(model=policy, args=args, train_dataset=data, processing_class=tokenizer, peft_config=gpu.trl_lora(lora_dropout))


METHODS = {  # harness method -> (its options, TRL's trainer of the same loss, that trainer's options for the harness method built)
    "dpo": ({}, gpu.trl_trainer, lambda m: {"loss_type": ["sigmoid"], "beta": m.beta}),
    "ipo": ({"average_log_prob": True}, gpu.trl_trainer, lambda m: {"loss_type": ["ipo"], "beta": m.beta}),
    # beta 2, not the harness's 50 (Appendix D's): at 50, SmolLM2 already prefers XSum's gold summaries so
    # clearly that the loss starts near e^-50, and nothing trains to compare
    "simpo": ({"beta": 2.0}, cpo_trainer, lambda m: {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": m.beta, "simpo_gamma": m.gamma}),
}


@contextmanager
def same_lora_init(seed: int = 0):
    """peft draws LoRA's A matrices from torch's global generator when ``get_peft_model`` wraps the
    model, and the two trainers reach that call with other draws behind them (TRL seeds at its
    start, the harness before loading its model): each call is seeded alike here, so both start
    from the same adapters. TRL's trainer modules hold their own references to the function."""
    import peft
    from trl.experimental.cpo import cpo_trainer as cpo
    from trl.trainer import dpo_trainer as dpo

    original = peft.get_peft_model

    def seeded(*args, **kwargs):
        torch.manual_seed(seed)
        return original(*args, **kwargs)

    peft.get_peft_model = dpo.get_peft_model = cpo.get_peft_model = seeded
    try:
        yield
    finally:
        peft.get_peft_model = dpo.get_peft_model = cpo.get_peft_model = original


def lora_deltas(state: dict) -> dict[str, torch.Tensor]:
    """Per adapted layer, the change its LoRA adapter makes to the weight, B A (the scale apart,
    the same for both trainers), by one name for both: peft's saved files drop the adapter's name.
    Compared as products, not factor by factor: Adam moves an entry whose gradient is float noise
    by a whole learning rate either way, which shows in a factor's largest entry but not in B A's
    norm."""
    lora = {k.replace(".default", ""): v.detach().float().cpu() for k, v in state.items() if "lora_" in k}
    return {k.removesuffix(".lora_A.weight"): lora[k.replace("lora_A", "lora_B")] @ v for k, v in lora.items() if "lora_A" in k}


def compare(model: str, rows: list[dict], method: str, steps: int, lr: float, folder: Path, **train) -> dict:
    """Trains ``method`` with both trainers and returns what each computed; ``train``: more harness
    ``TrainConfig`` options (its prefix sharing, micro-batch, checkpointing), which must not change
    a number."""
    from safetensors.torch import load_file
    from transformers.trainer_callback import ProgressCallback

    from harness.method import CHOSEN, REJECTED, build_method

    options, trl_trainer, trl_options = METHODS[method]
    built = build_method(method, options)
    with same_lora_init():
        harness = gpu.harness_trainer(model, method, rows, folder / "harness", options, lr=lr, max_steps=steps, schedule="constant",
                                      lora_dropout=0.0, bf16=False, **train)  # fmt: skip
        harness.train()
        trl = trl_trainer(model, rows, str(folder / "trl"), lora_dropout=0.0, max_steps=steps, learning_rate=lr, lr_scheduler_type="constant",
                          bf16=False, optim="adamw_torch", logging_steps=1, **gpu.checkpointing_option(False),
                          **trl_options(built))  # fmt: skip
        trl.remove_callback(ProgressCallback)  # it prints every step's logs, which this script reads from log_history and prints once
        trl.train()
    reference = torch.load(folder / "harness" / "reference_logps.pt", weights_only=True)["sums"] if built.uses_reference else None
    ours = lora_deltas(load_file(folder / "harness" / "adapter" / "adapter_model.safetensors"))
    theirs = lora_deltas(trl.model.state_dict())
    assert ours.keys() == theirs.keys(), sorted(ours.keys() ^ theirs.keys())[:4]
    return {
        "method": method,
        "reference_diff": max((reference[k] - torch.tensor(trl.train_dataset[f"ref_{k}_logps"])).abs().max().item() for k in (CHOSEN, REJECTED))
        if reference else None,  # SimPO has none
        "harness_losses": [json.loads(line)["loss"] for line in (folder / "harness" / "metrics.jsonl").read_text().splitlines()],
        "trl_losses": [entry["loss"] for entry in trl.state.log_history if "loss" in entry],
        "weight_diff": max(((ours[k] - theirs[k]).norm() / theirs[k].norm()).item() for k in ours),  # the layer whose updates differ most
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a model the harness resolves: hub id, local folder or smollm2-135m")
    parser.add_argument("--pairs", type=int, default=4, help="XSum pairs: every step trains on all of them")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (the first at the reference, where a DPO loss is log 2)")
    parser.add_argument("--lr", type=float, default=5e-4, help="constant learning rate, large enough for the weights to move in a few steps")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--prefix-sharing", default="packed", choices=("packed", "cache", "none"), help="the harness's; TRL scores every sequence in full")
    parser.add_argument("--micro-batch-size", type=int, default=1, help="the harness's pairs per forward (TRL: all of them in one)")
    args = parser.parse_args()
    from harness.models import resolve_model

    model = resolve_model(args.model)
    rows = gpu.xsum_pairs(args.pairs)
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as folder:
            r = compare(model, rows, method, args.steps, args.lr, Path(folder), prefix_sharing=args.prefix_sharing, micro_batch_size=args.micro_batch_size)
        gaps = [abs(a - b) for a, b in zip(r["harness_losses"], r["trl_losses"])]
        reference = "no reference" if r["reference_diff"] is None else f"reference log-probs differ by at most {r['reference_diff']:.2e}"
        print(f"{method}: {reference}; the weight updates (B A) by {r['weight_diff']:.2e} of their norm, in the layer where they differ most")
        print(f"  loss per step, harness: {' '.join(f'{x:.7g}' for x in r['harness_losses'])}")
        print(f"  loss per step, TRL:     {' '.join(f'{x:.7g}' for x in r['trl_losses'])}   (largest gap {max(gaps):.2e})")


if __name__ == "__main__":
    main()
