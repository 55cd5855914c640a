"""Judging throughput against a local OpenAI-compatible server that answers after a fixed delay.

    python benchmarks/judge.py [--judgments 1000] [--delay 0.1] [--concurrency 64]

The server is the test suite's (tests/openai_server.py), run as a process of its own: real HTTP
on loopback, the real ``openai`` client, a fresh verdict cache. Prints the wall time, judgments per
second, and the time of a second, fully cached pass.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.judge import Comparison, build_judge

SERVER = Path(__file__).resolve().parent.parent / "tests" / "openai_server.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.1, help="server latency per request, seconds")
    parser.add_argument("--concurrency", type=int, default=64, help="the judge's default")
    args = parser.parse_args()
    comparisons = [Comparison("summary", "Summarise.", f"Article {i}.", f"summary a{i}", f"summary b{i}") for i in range(args.judgments)]
    server = subprocess.Popen([sys.executable, str(SERVER), "--delay", str(args.delay)], stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            judge = build_judge("openai", {"model": "bench", "base_url": base_url, "concurrency": args.concurrency,
                                           "cache_path": str(Path(tmp) / "cache.sqlite")})  # fmt: skip
            import openai  # noqa: F401  (the client's import is start-up, not judging: outside the clock)

            start = time.perf_counter()
            verdicts = judge.judge(comparisons)
            first = time.perf_counter() - start
            requests = judge.stats["requests"]
            start = time.perf_counter()
            judge.judge(comparisons)
            cached = time.perf_counter() - start
    finally:
        server.terminate()
    failed = sum(v.preference is None for v in verdicts)
    print(f"{args.judgments} judgments, server delay {args.delay * 1000:.0f} ms, concurrency {args.concurrency}")
    print(f"first pass:  {first:.2f} s ({args.judgments / first:.0f} judgments/s), {requests} requests, {failed} failed")
    print(f"cached pass: {cached:.2f} s, {judge.stats['requests']} requests")


if __name__ == "__main__":
    main()
