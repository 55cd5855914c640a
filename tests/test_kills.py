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
STAGES = ("train", "generate", "judge")  # in the order a run goes through them


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


def _run_timed(command: list[str], out: Path) -> dict[str, float]:
    """Run to the end uninterrupted, watching each stage's progress: its seconds per row, so a
    kill's random pause can be a fraction of a row on a fast machine as on a slow one."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: dict[str, list[tuple[float, int]]] = {stage: [] for stage in STAGES}
    while proc.poll() is None:
        for stage, changes in seen.items():
            n = _progress(out, stage)
            if n and (not changes or changes[-1][1] != n):
                changes.append((time.perf_counter(), n))
        time.sleep(0.002)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    pace = {}
    for stage, changes in seen.items():
        (t0, n0), (t1, n1) = changes[0], changes[-1]
        assert n1 > n0, f"the {stage} stage was not seen making progress"
        pace[stage] = (t1 - t0) / (n1 - n0)
    return pace


def _kill_once(command: list[str], out: Path, stage: str, pause: float) -> bool:
    """Start the run, wait until ``stage`` has written a row more, wait ``pause`` seconds more and
    SIGKILL it. False when the run got past the stage before that happened."""
    start = _progress(out, stage)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while proc.poll() is None and _progress(out, stage) <= start and time.time() < deadline:
        time.sleep(0.002)
    time.sleep(pause)
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

        whole, killed = tmp_path / "whole" / "run", tmp_path / "killed" / "run"  # apart: a run copies what a folder beside it finished
        pace = _run_timed(command(whole), whole)  # seconds per row of each stage
        kills = Counter()
        for stage in STAGES:  # each kill lands within about a row after the first it waited for, so ten fit in every stage
            while kills[stage] < KILLS_PER_STAGE and _kill_once(command(killed), killed, stage, rng.uniform(0, pace[stage])):
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
