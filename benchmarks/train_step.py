"""Training step cost of DPO and SRPO on SmolLM2-135M-Instruct (CPU or GPU).

Same data (the first XSum test articles, gold summary as chosen, another article's summary as
rejected), same batch, same LoRA, same options for both methods; prints seconds per optimizer
step, training tokens per second (tokens of every sequence the method reads), and the SRPO/DPO
step-cost ratio, for each way of sharing prompt prefixes (``TrainConfig.prefix_sharing``).

    python benchmarks/train_step.py [--pairs 4] [--steps 4] [--sharing packed,cache,none] [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from harness.config import build_options
from harness.datasources import Rows
from harness.errors import HarnessError
from harness.method import build_method
from harness.models import SMOLLM2, model_ref, resolve_model
from harness.task import build_task
from harness.training.config import TrainConfig
from harness.training.trainer import Trainer, TrainInputs


def xsum_pairs(n: int) -> list[dict]:
    examples = build_task("xsum").load("test", limit=n + 1).rows
    return [{**ex, "chosen": ex["reference"], "rejected": examples[i + 1]["reference"]} for i, ex in enumerate(examples[:n])]


def measure(method: str, rows: list[dict], config: TrainConfig, model: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        Trainer(TrainInputs(build_method(method), config, build_task("xsum"), model_ref(model), Rows.of(rows), seed=0), Path(out)).train()
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    timed = records[1:] or records  # the first step pays one-off allocations: a warm-up
    seconds = [r["seconds"] for r in timed]
    tokens = sum(r["tokens"] for r in timed)
    return {"method": method, "sharing": config.prefix_sharing, "s_per_step": statistics.median(seconds), "tokens_per_s": tokens / sum(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="pairs per optimizer step (the batch)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per configuration; the first is a warm-up, the median of the rest is reported")
    parser.add_argument("--sharing", default="packed,cache,none", help="comma-separated prefix_sharing values to measure")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="train with gradient checkpointing (then 'cache' cannot run)")
    parser.add_argument("--model", default=SMOLLM2, help="model (default: SmolLM2-135M-Instruct, offline)")
    args = parser.parse_args()
    modes = args.sharing.split(",")
    options = {"lr": 1e-5, "batch_size": args.pairs, "micro_batch_size": 1, "max_steps": args.steps, "checkpoint_every": 0,
               "gradient_checkpointing": args.gradient_checkpointing}  # fmt: skip
    try:  # the trainer's own checks, before anything trains: a value it does not know, cache under checkpointing
        configs = [build_options(TrainConfig, {**options, "prefix_sharing": sharing}, what="train") for sharing in modes]
    except HarnessError as exc:
        parser.error(str(exc))
    model = resolve_model(args.model)
    rows = xsum_pairs(args.pairs)
    results = [measure(method, rows, config, model) for config in configs for method in ("dpo", "srpo")]
    checkpointing = ", gradient checkpointing" if args.gradient_checkpointing else ""
    print(f"\n{args.pairs} XSum pairs per step, LoRA r16, micro-batch 1{checkpointing}, model {args.model}")
    print(f"{'method':6} {'prefix sharing':>15} {'s/step':>8} {'tokens/s':>9}")
    for r in results:
        print(f"{r['method']:6} {r['sharing']:>15} {r['s_per_step']:8.2f} {r['tokens_per_s']:9.0f}")
    for sharing in modes:
        by = {r["method"]: r for r in results if r["sharing"] == sharing}
        print(f"SRPO/DPO step-cost ratio, prefix sharing {sharing}: {by['srpo']['s_per_step'] / by['dpo']['s_per_step']:.2f}")


if __name__ == "__main__":
    main()
