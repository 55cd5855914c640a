"""Issue 11's targets, each beside what benchmarks/gpu.py measured: met, not met, or not measured.

    python benchmarks/gpu_targets.py gpu.json     # gpu.py's --out; gpu_check.sh writes $OUT/targets.md

gpu.py rewrites its JSON after every result, so a run cut off by its time limit is read as far as
it got, and a target it did not reach says "not measured". Training rows are compared at gpu.py's
pairs per step (the issue's batch of 8) with gradient checkpointing as each trainer has it by
default on a GPU (on: TRL's DPOConfig and the harness's ``gradient_checkpointing: auto``), then
like for like without it. The targets were set on the 1B shape: on another shape they are only
compared, not met.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.engines.transformers_engine import TransformersEngine

# The "Done when", as numbers.
DPO_OVER_TRL = 1.0  # harness DPO's step time at most TRL DPOTrainer's, same model, data, LoRA, batch
DPO_OVER_TRL_GOAL = 0.8  # the goal for that ratio
SRPO_OVER_DPO = 1.6  # SRPO's step time at most 1.6x the harness's DPO's
REFERENCE_BEFORE_S = 3.0  # the reference pass before the issue: about 3 s a pair (on the CPU, 16 cores)
REFERENCE_SPEED_UP = 50  # the reference pass at least 50x faster than that
TOKENS_PER_S = 1500  # transformers engine, 32 XSum prompts, greedy, 48 new tokens, batched
GENERATION = {"prompts": 32, "new_tokens": 48, "temperature": 0.0}  # the generation target's setting
TARGET_SHAPE = "llama-1b"

SHOWN = {"s_per_step": "{:.3f} s/step", "peak_gb": "{:.1f} GB"}  # how each training measure prints


def _step(results: dict, trainer: str, micro: int, checkpointing: bool) -> dict | None:
    return next((s for s in results["steps"] if (s["trainer"], s["micro_batch_size"], s["gradient_checkpointing"]) == (trainer, micro, checkpointing)), None)


def _shown(row: dict | None, key: str) -> str:
    """``row``'s ``key`` as measured, or why there is no number."""
    if row is None:
        return "not run"
    if row.get(key) is None:
        return row.get("note") or ("no GPU" if key == "peak_gb" else "not measured")
    return SHOWN[key].format(row[key])


def _ratio(target: str, name: tuple[str, str], rows: tuple[dict | None, dict | None], key: str, limit: float, goal: float | None = None) -> tuple[str, str, str]:
    """The target that ``rows[0]``'s ``key`` is at most ``limit`` times ``rows[1]``'s (and the goal, ``goal`` times)."""
    measured = f"{name[0]} {_shown(rows[0], key)}, {name[1]} {_shown(rows[1], key)}"
    if rows[0] is not None and rows[0].get("note") == "out of memory":
        return target, measured, "not met"
    if any(r is None or r.get(key) is None for r in rows):
        return target, measured, "not measured"
    ratio = rows[0][key] / rows[1][key]
    verdict = "not met" if ratio > limit else ("met, and the goal" if goal is not None and ratio <= goal else "met")
    return target, f"{measured}: {ratio:.2f}x", verdict


def verdicts(results: dict) -> list[tuple[str, str, str]]:
    """(target, what was measured, verdict) for each of issue 11's targets in gpu.py's ``results``."""
    batch = results["pairs"]
    table = []
    for checkpointing in (True, False):
        how = "checkpointing on (the GPU default of both)" if checkpointing else "checkpointing off"
        dpo, trl, srpo = (_step(results, trainer, batch, checkpointing) for trainer in ("harness DPO", "TRL DPOTrainer", "harness SRPO"))
        table += [
            _ratio(f"DPO step time at most TRL's (goal {DPO_OVER_TRL_GOAL}x), batch {batch}, {how}", ("harness", "TRL"), (dpo, trl), "s_per_step", DPO_OVER_TRL, DPO_OVER_TRL_GOAL),
            _ratio(f"DPO peak memory at most TRL's, batch {batch}, {how}", ("harness", "TRL"), (dpo, trl), "peak_gb", DPO_OVER_TRL),
            _ratio(f"SRPO step time at most {SRPO_OVER_DPO}x harness DPO's, micro-batch {batch}, {how}", ("SRPO", "DPO"), (srpo, dpo), "s_per_step", SRPO_OVER_DPO),
        ]  # fmt: skip
    srpo, trl = _step(results, "harness SRPO", batch, True), _step(results, "TRL DPOTrainer", batch, True)
    if srpo is not None and srpo.get("note") == "out of memory":
        fits = "not met"
    elif any(r is None or r.get("s_per_step") is None for r in (srpo, trl)):
        fits = "not measured"
    else:
        fits = "met"
    table.append((f"SRPO fits micro-batch {batch} where TRL's DPO fits batch {batch} (checkpointing on)",
                  "; ".join(f"{name} {_shown(row, 's_per_step')}" + (f", {_shown(row, 'peak_gb')}" if row and row.get("s_per_step") else "") for name, row in (("SRPO", srpo), ("TRL", trl))), fits))  # fmt: skip
    reference = next((o for o in results["other"] if o.get("part") == "reference"), None)
    least = REFERENCE_SPEED_UP / REFERENCE_BEFORE_S
    table.append((f"reference pass at least {REFERENCE_SPEED_UP}x faster than {REFERENCE_BEFORE_S:g} s a pair ({least:.1f} pairs/s)",
                  f"{reference['pairs_per_s']:.1f} pairs/s" if reference else "not run",
                  "not measured" if reference is None else ("met" if reference["pairs_per_s"] >= least else "not met")))  # fmt: skip
    default = TransformersEngine.cache
    rows = [o for o in results["other"] if o.get("part") == "generation" and all(o[k] == v for k, v in GENERATION.items())]
    for cache in ("dynamic", "static", "paged"):
        for through_adapter in (False, True):
            row = next((o for o in rows if o["cache"] == cache and o["through_adapter"] == through_adapter), None)
            what = f"{cache} cache{' (the default)' if cache == default else ''}{', through a LoRA adapter as a run generates' if through_adapter else ''}"
            table.append((f"generation at least {TOKENS_PER_S:,} tokens/s, {GENERATION['prompts']} prompts, greedy, {GENERATION['new_tokens']} new tokens, {what}",
                          f"{row['tokens_per_s']:,.0f} tokens/s" if row else "not run",
                          "not measured" if row is None else ("met" if row["tokens_per_s"] >= TOKENS_PER_S else "not met")))  # fmt: skip
    return table


def render(results: dict) -> str:
    """A Markdown table of ``verdicts``, headed by the device and shape they were measured on."""
    head = f"device: {results['device']}; model: random-weight {results['shape']}; {results['pairs']} pairs per step"
    if results["shape"] != TARGET_SHAPE:
        head += f"\n(the targets were set on {TARGET_SHAPE}: a verdict on {results['shape']} only shows how they are read)"
    lines = [head, "", "| target | measured | verdict |", "| --- | --- | --- |"]
    for target, measured, verdict in verdicts(results):
        lines.append(f"| {target} | {measured} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="benchmarks/gpu.py's --out JSON")
    print(render(json.loads(parser.parse_args().results.read_text())))


if __name__ == "__main__":
    main()
