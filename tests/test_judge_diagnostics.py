"""Is the judge any good? Diagnostics from the stored verdicts, on screen, in summary.json and on
the page; a second judge added to a finished run; their agreement."""

import json
import re

import pandas as pd
import pytest
from conftest import run_cli
from openai_server import FakeOpenAIServer
from tiny import xsum_files

from harness.diagnostics import cohens_kappa, judge_diagnostics


def _run(tiny, test, pairs, out, server, *extra):
    return ["--task", "xsum", "--method", "srpo,dpo", "--model", tiny, "--task-arg", f"data_files.test={test}", "--task-arg", f"data_files.preference={pairs}",
            "--limit", "4", "--revisions", "1", "--max-new-tokens", "5", "--train-arg", "batch_size=2", "--judge", "openai",
            "--judge-arg", f"base_url={server.base_url}", "--judge-arg", f"cache_path={out}.sqlite", "--output-dir", str(out), *extra]  # fmt: skip


def _cells(html: str, table: str) -> list[list[str]]:
    body = re.search(rf'<table class="sortable" id="{table}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_a_judge_that_always_prefers_position_a_is_shown_as_such(tiny, tmp_path):
    test, pairs = xsum_files(tmp_path)
    out = tmp_path / "run"
    with FakeOpenAIServer(lambda seen: "Preferred: A") as server:
        result = run_cli("run", *_run(tiny, test, pairs, out, server))
    assert result.returncode == 0, result.stderr[-2000:]
    [judge] = json.loads((out / "summary.json").read_text())["judges"]
    d = judge["diagnostics"]
    assert d["first_position_win_rate"] == 1.0 and d["position_consistency"] == 0.0 and d["tie_rate"] == 1.0
    assert d["pairs_in_both_orders"] > 0 and d["failed"] == 0
    assert "judge diagnostics" in result.stdout and "1.00" in result.stdout
    [row] = _cells((out / "leaderboard.html").read_text(), "judges")
    assert row[0] == "openai:gpt-4o (primary)"
    assert (row[5], row[6]) == ("0.00", "1.00")


def test_a_second_judge_joins_a_finished_run_without_touching_the_first(tiny, tmp_path):
    test, pairs = xsum_files(tmp_path)
    out = tmp_path / "run"
    shorter_wins = lambda seen: "Preferred: " + ("A" if len(seen.split("SUMMARY A:")[1].split("SUMMARY B:")[0]) <= len(seen.split("SUMMARY B:")[1].split("Which")[0]) else "B")  # noqa: E731
    with FakeOpenAIServer(shorter_wins) as first:
        assert run_cli("run", *_run(tiny, test, pairs, out, first)).returncode == 0
    before = (out / "judgments.jsonl").read_bytes()
    results = json.loads((out / "summary.json").read_text())["results"]
    with FakeOpenAIServer(lambda seen: "Preferred: A") as second:
        added = run_cli("judge", str(out), "--judge", "openai", "--judge-arg", f"base_url={second.base_url}", "--judge-arg", "model=other-judge",
                        "--judge-arg", f"cache_path={tmp_path / 'second.sqlite'}", "--judge-arg", "concurrency=2")  # chunks of 4 pairs  # fmt: skip
        assert added.returncode == 0, added.stderr[-2000:]
        assert second.served > 0
        bar = added.stderr.replace("\r", "\n").splitlines()[-1]  # the judging's last progress line: what it cost, summed over its chunks
        shown = re.search(r"requests=(\d+), cache_hits=(\d+), failed=0, cost_usd=[\d.e-]+\]$", bar)
        usage = [json.loads(line) for line in (out / "judge-usage.jsonl").read_text().splitlines()]
        theirs = [u for u in usage if u["judge"] != usage[0]["judge"]]  # the second judge's chunks
        assert len(theirs) > 1 and shown and [int(shown[1]), int(shown[2])] == [sum(u["requests"] for u in theirs), sum(u["cache_hits"] for u in theirs)], bar
    assert (out / "judgments.jsonl").read_bytes().startswith(before)  # the first judge's verdicts untouched
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"] == results  # the run's own judge still makes the headline
    assert [j["primary"] for j in summary["judges"]] == [True, False] and summary["judges"][1]["judge"] == "openai:other-judge"
    assert summary["judges"][1]["results"] and summary["judges"][1]["diagnostics"]["first_position_win_rate"] == 1.0
    [pair] = summary["agreement"]
    assert pair["pairs"] > 0 and pair["kappa"] is not None and -1 <= pair["kappa"] <= 1
    assert "agreement of the judges" in added.stdout
    assert len(_cells((out / "leaderboard.html").read_text(), "agreement")) == 1
    refused = run_cli("judge", str(out), "--judge", "openai", "--limit", "2")
    assert refused.returncode == 2 and "takes only --judge and --judge-arg" in refused.stderr


def test_kappa_and_consistency_on_known_verdicts():
    a = pd.Series([1, 1, -1, -1, 0, 1])
    assert cohens_kappa(a, a) == 1.0
    assert cohens_kappa(a, -a) < 0
    frame = pd.DataFrame({"preference": [1.0, 0.5, 0.0, None], "first": [1.0, 1.0, 0.0, None], "second": [0.0, 1.0, 1.0, None],
                          "error": ["", "", "", "no verdict in 3 answer(s)"], "length": [10, 5, 5, 5], "opponent_length": [2, 5, 30, 5]})  # fmt: skip
    d = judge_diagnostics(frame)
    # pair 1 favours the candidate in both orders, pair 2 favours whatever is first, pair 3 the opponent in both
    assert d["position_consistency"] == pytest.approx(2 / 3) and d["first_position_win_rate"] == pytest.approx(4 / 6)
    assert d["tie_rate"] == pytest.approx(1 / 3) and d["failed"] == 1 and d["failed_by_kind"] == {"unparseable": 1}
    assert [b["n"] for b in d["by_length"]] == [1, 0, 1, 1, 0]
