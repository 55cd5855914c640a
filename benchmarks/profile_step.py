"""Where one training step's time goes on the device, the harness's against TRL's; and one generation call's.

    python benchmarks/profile_step.py --tokenizer DIR [--shape llama-1b] [--pairs 8]
        [--runs dpo-checkpointing,trl-checkpointing,dpo,trl,generate] [--top 10]

``benchmarks/gpu.py`` says how long a step takes; this says what it spends it on. torch.profiler
records the third optimizer step of a run (two warm up), and prints: the step's wall time; its
device time (the kernels' sum: well below the wall time, the device waits on the host and the step
is launch-bound); its kernel launches; and the kernels that took the most device time. ``generate``
records one call of the transformers engine (gpu.py's 32 prompts, greedy, dynamic cache) after a
warm-up call, with its launches per decoding step. On a CPU there are no kernels: the lists are of
operators by CPU time (that is how this script is tried before a GPU session).

Runs: ``dpo``, ``srpo`` (the harness's trainer, every pair of a step in one forward) and ``trl``
(TRL's DPOTrainer, the ``bench`` extra), each with ``-checkpointing`` for gradient checkpointing
on; and ``generate``. Model and data are gpu.py's: a random-weight shape, XSum pairs, LoRA r16.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu  # noqa: E402  (the shapes, the data and the runs themselves)

CUDA = torch.cuda.is_available()
WARM_STEPS = 2  # optimizer steps before the one recorded: compilation, allocator growth, the reference pass


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def summary(prof, top: int, per: str, per_count: int) -> str:
    """The recorded window in lines: device time and kernel launches (also per ``per``, of which it
    holds ``per_count``), then the ``top`` kernels by device time; on a CPU, operators by CPU time."""
    averages = prof.key_averages()
    if CUDA:
        launches = sum(e.count for e in averages if "LaunchKernel" in e.key)
        kernels = sorted((e for e in averages if e.device_type == torch.autograd.DeviceType.CUDA), key=lambda e: -e.self_device_time_total)
        device_ms = sum(e.self_device_time_total for e in kernels) / 1e3
        lines = [f"  device time {device_ms:.1f} ms, {launches} kernel launches ({launches / per_count:.0f} per {per})"]
        lines += [f"  {e.self_device_time_total / 1e3:9.2f} ms {e.count:6} x {e.key[:100]}" for e in kernels[:top]]
    else:
        operators = sorted((e for e in averages if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
        calls = sum(e.count for e in operators)
        lines = [f"  no device: operators by CPU time, {calls} operator calls, nested ones counted ({calls / per_count:.0f} per {per})"]
        lines += [f"  {e.self_cpu_time_total / 1e3:9.2f} ms {e.count:6} x {e.key}" for e in operators[:top]]
    return "\n".join(lines)


def profile_training(run: str, model: str, rows: list[dict], top: int) -> str:
    """Profile the step after ``WARM_STEPS`` of training ``run``, whichever trainer's optimizer takes
    it: a global optimizer hook moves the profiler on after each step."""
    trainer, _, checkpointing = run.partition("-")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    ends: list[float] = []

    with profile(activities=activities, schedule=schedule(wait=WARM_STEPS - 1, warmup=1, active=1, repeat=1)) as prof:

        def after_step(optimizer, args, kwargs):
            _sync()
            ends.append(time.perf_counter())
            prof.step()

        hook = register_optimizer_step_post_hook(after_step)
        try:
            steps = WARM_STEPS + 2  # one more after the recorded one, so the record closes inside training
            if trainer == "trl":
                result = gpu.trl_step(model, rows, steps, checkpointing=bool(checkpointing))
            else:
                result = gpu.harness_step(model, trainer, rows, len(rows), steps, checkpointing=bool(checkpointing))
        finally:
            hook.remove()
    if result.get("note"):
        return f"{run}: {result['note']}"
    head = f"{run} ({result['trainer']}, micro-batch {result['micro_batch_size']}): step {WARM_STEPS + 1} took {ends[WARM_STEPS] - ends[WARM_STEPS - 1]:.3f} s"
    return head + "\n" + summary(prof, top, "pair", len(rows))


def profile_generation(model: str, prompts: int, new_tokens: int, top: int) -> str:
    """Profile one generation call of the transformers engine after a warm-up call."""
    from harness.engine import SamplingParams, build_engine

    engine = build_engine("transformers", {"model": model})
    texts = gpu.xsum_prompts(engine.tokenizer(), prompts)
    params = SamplingParams(max_new_tokens=new_tokens)
    engine.generate(texts, params)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    _sync()
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        engine.generate(texts, params)
        _sync()
    seconds = time.perf_counter() - start
    engine.close()
    head = f"generate ({prompts} XSum prompts, greedy, {new_tokens} new tokens, dynamic cache): {seconds:.2f} s under the profiler"
    return head + "\n" + summary(prof, top, "decoding step", new_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a folder with the tokenizer files (e.g. the converted SmolLM2's)")
    parser.add_argument("--shape", choices=sorted(gpu.SHAPES), default="llama-1b")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per optimizer step, all in one forward")
    parser.add_argument("--runs", default="dpo-checkpointing,trl-checkpointing,dpo,trl,generate", help="comma-separated: dpo, srpo, trl (each with -checkpointing), generate")
    parser.add_argument("--prompts", type=int, default=32, help="prompts of the generation call")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--top", type=int, default=10, help="kernels (operators on a CPU) listed per run")
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name() if CUDA else 'CPU'}; model: random-weight {args.shape}; {args.pairs} XSum pairs per step", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        model = gpu.build_model(args.shape, args.tokenizer, Path(folder) / "model")
        rows = gpu.xsum_pairs(args.pairs)
        for run in args.runs.split(","):
            gpu.reset_memory()
            if run == "generate":
                print(profile_generation(model, args.prompts, args.new_tokens, args.top), flush=True)
            else:
                print(profile_training(run, model, rows, args.top), flush=True)


if __name__ == "__main__":
    main()
