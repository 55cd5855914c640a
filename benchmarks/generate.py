"""Generation throughput: batched against one prompt at a time (transformers engine), and vLLM
against transformers where a GPU and vLLM are present.

    python benchmarks/generate.py [--task xsum|arena-hard] [--prompts 32] [--batch-size 32] [--max-batch-tokens N] [--max-new-tokens N] [--cache dynamic|static|paged]

Greedy decoding of the 0-revision prompts of the first N offline test examples with
SmolLM2-135M-Instruct; prints seconds, completions/s, generated tokens/s, the speed-up ratio and
how many batched completions (with the ``--cache`` asked for) are identical to those generated one
at a time.
XSum prompts are long articles with one-sentence answers, so prompt processing (compute-bound,
which batching cannot speed up on a CPU) dominates; Arena-Hard prompts are short requests with
long answers, so decoding (memory-bound, which batching amortises) dominates.
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.engine import SamplingParams, build_engine
from harness.models import SMOLLM2
from harness.prompting import PromptFormatter
from harness.task import build_task


def timed(engine, prompts, params, stop) -> tuple[float, int, list]:
    start = time.perf_counter()
    outputs = engine.generate(prompts, params, None, stop)
    return time.perf_counter() - start, sum(o.completion_tokens for o in outputs), outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="at most this many prompts per batch")
    parser.add_argument("--max-batch-tokens", default="auto", help="at most this many padded prompt tokens per batch (default: the engine's auto, 4096 on a CPU, 65536 on a GPU)")
    parser.add_argument("--max-new-tokens", type=int, help="default: 48 for xsum, 128 for arena-hard")
    parser.add_argument("--cache", default="dynamic", choices=["dynamic", "static", "paged"], help="the batched engine's KV cache (paged: continuous batching)")
    parser.add_argument("--task", default="xsum", choices=["xsum", "arena-hard"])
    parser.add_argument("--model", default=SMOLLM2)
    args = parser.parse_args()
    task = build_task(args.task)
    examples = task.load("test", limit=args.prompts).rows
    args.max_new_tokens = args.max_new_tokens or (48 if args.task == "xsum" else 128)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    rows = []
    batched = build_engine("transformers", {"model": args.model, "batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens, "cache": args.cache})
    formatter = PromptFormatter(task, batched.tokenizer())
    prompts = [formatter.prompt(ex) for ex in examples]
    timed(batched, prompts[:2], params, task.stop)  # warm-up: first-call allocations
    rows.append(("transformers", f"{args.cache} <={args.batch_size}, {args.max_batch_tokens} tokens", *timed(batched, prompts, params, task.stop)))
    single = build_engine("transformers", {"model": args.model, "batch_size": 1})
    rows.append(("transformers", "one at a time", *timed(single, prompts, params, task.stop)))
    if torch.cuda.is_available():
        try:
            vllm = build_engine("vllm", {"model": args.model})
            timed(vllm, prompts[:2], params, task.stop)
            rows.append(("vllm", "continuous batching", *timed(vllm, prompts, params, task.stop)))
        except Exception as exc:  # vLLM is an optional extra
            print(f"vllm skipped: {exc}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{args.prompts} {args.task} prompts, greedy, max {args.max_new_tokens} new tokens, {args.model} on {device}")
    print(f"{'engine':13} {'mode':28} {'seconds':>8} {'compl/s':>8} {'tokens/s':>9}")
    for engine, mode, seconds, tokens, _ in rows:
        print(f"{engine:13} {mode:28} {seconds:8.2f} {args.prompts / seconds:8.2f} {tokens / seconds:9.1f}")
    print(f"batched / one-at-a-time speed-up: {rows[1][2] / rows[0][2]:.1f}x")
    same = sum(a == b for a, b in zip(rows[0][4], rows[1][4]))  # text, token counts and finish reason
    print(f"batched ({args.cache}) completions identical to one at a time: {same} of {args.prompts}")
    if len(rows) > 2:
        print(f"vllm / transformers (batched) speed-up: {rows[0][2] / rows[2][2]:.1f}x")


if __name__ == "__main__":
    main()
