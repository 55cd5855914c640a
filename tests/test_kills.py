"""Kill the whole pipeline with SIGKILL at seeded random points, at least ten times in each of
training, generation and judging, then let it finish: the summary must equal an uninterrupted
run's, with no row lost or written twice."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from openai_server import FakeOpenAIServer
from tiny import build_tiny, xsum_files

KILLS_PER_STAGE = 10


def prefers_shorter(prompt: str) -> str:
    a = re.search(r"SUMMARY A:\n(.*?)\n\nSUMMARY B:", prompt, re.S).group(1)
    b = re.search(r"SUMMARY B:\n(.*?)\n\nWhich summary", prompt, re.S).group(1)
    return f"Preferred: {'A' if len(a) <= len(b) else 'B'}"


def _lines(*paths: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in paths if p.exists())


def _progress(out: Path, stage: str) -> int:
    if stage == "train":
        return _lines(*out.glob("train/*/metrics.jsonl"))
    return _lines(out / ("generations.jsonl" if stage == "generate" else "judgments.jsonl"))


def _kill_once(command: list[str], out: Path, stage: str, step: int, rng: random.Random) -> bool:
    """Start the run, wait until ``stage`` has made ``step`` more rows of progress, wait a random
    moment more and SIGKILL it. False when the run got past the stage before that happened."""
    start = _progress(out, stage)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while proc.poll() is None and _progress(out, stage) < start + step and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.08))
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed or proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    return killed


@pytest.mark.slow
def test_killed_runs_end_with_the_uninterrupted_summary(tmp_path):
    tiny = str(build_tiny(tmp_path / "tiny"))
    test, pairs = xsum_files(tmp_path / "data", n=12)
    rng = random.Random(20261127)
    with FakeOpenAIServer(prefers_shorter, delay=0.01) as server:

        def command(out: Path) -> list[str]:
            return ["run", "--task", "xsum", "--method", "srpo,dpo", "--model", tiny, "--task-arg", f"data_files.test={test}",
                    "--task-arg", f"data_files.preference={pairs}", "--limit", "12", "--revisions", "1", "--max-new-tokens", "6",
                    "--temperature", "1.0", "--train-arg", "batch_size=2", "--train-arg", "max_steps=16", "--train-arg", "checkpoint_every=1",
                    "--engine-arg", "batch_size=2", "--judge", "openai", "--judge-arg", f"base_url={server.base_url}", "--judge-arg", "concurrency=1",
                    "--judge-arg", f"cache_path={out}.sqlite", "--output-dir", str(out)]  # fmt: skip

        whole, killed = tmp_path / "whole", tmp_path / "killed"
        done = subprocess.run([sys.executable, "-m", "harness.cli", *command(whole)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        kills = Counter()
        for stage, step in (("train", 2), ("generate", 1), ("judge", 1)):
            while kills[stage] < KILLS_PER_STAGE and _kill_once(command(killed), killed, stage, step, rng):
                kills[stage] += 1
        assert kills == {"train": KILLS_PER_STAGE, "generate": KILLS_PER_STAGE, "judge": KILLS_PER_STAGE}
        finished = subprocess.run([sys.executable, "-m", "harness.cli", *command(killed)], capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr[-3000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, killed))
    assert a["results"] == b["results"] and a["paired"] == b["paired"]
    for out in (whole, killed):
        generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
        assert Counter((g["example_id"], g["method"], g["revision"]) for g in generations) == Counter(
            {(str(i), m, r): 1 for i in range(12) for m in ("srpo", "dpo") for r in (0, 1)})  # every completion once
        verdicts = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
        identities = Counter((v["example_id"], v["method"], v["opponent"], v["revision"]) for v in verdicts)
        assert len(identities) == 12 * 2 * 2 + 12 * 2 and set(identities.values()) == {1}  # every verdict once
        for method in ("srpo", "dpo"):
            steps = [json.loads(line)["step"] for line in (out / "train" / method / "metrics.jsonl").read_text().splitlines()]
            assert steps == list(range(1, 17))  # no step lost or logged twice
    texts = lambda out: {(g["example_id"], g["method"], g["revision"]): g["text"] for g in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}  # noqa: E731
    assert texts(whole) == texts(killed)  # sampled at temperature 1, yet the same texts
