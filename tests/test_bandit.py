"""The paper's Sec. 5 bandit end to end through the CLI, and its user errors."""

import json

import numpy as np
import pytest

from harness.task import build_task


def test_reproduces_figure_2(tmp_path, cli):
    out = tmp_path / "run"
    result = cli("run", "--task", "bandit", "--method", "srpo,dpo,ipo", "--behavior", "uniform,skewed", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert f"run folder: {out}" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "bandit"
    best = {(r["method"], r["behavior"]): r["best_arm"] for r in summary["results"]}
    assert best == {
        ("srpo", "uniform"): 2, ("srpo", "skewed"): 2,  # SRPO is robust to the skew
        ("dpo", "uniform"): 2, ("dpo", "skewed"): 0,  # DPO and IPO follow mu1 to y0
        ("ipo", "uniform"): 2, ("ipo", "skewed"): 0,
    }  # fmt: skip
    for row in summary["results"]:
        assert len(row["policy"]) == 3 and sum(row["policy"]) == pytest.approx(1.0, abs=1e-6)
    html = (out / "leaderboard.html").read_text()
    assert "Fig. 2" in html and "Plotly" in html
    assert 'src="http' not in html and "src='http" not in html  # plotly's JS is inlined, nothing fetched


def test_rerun_reuses_every_stage(tmp_path, cli):
    out = tmp_path / "run"
    args = ("run", "--task", "bandit", "--method", "dpo", "--behavior", "skewed", "--task-arg", "steps=200", "--output-dir", str(out))
    assert cli(*args).returncode == 0
    policy = out / "policies" / "dpo-skewed.json"
    first = policy.stat().st_mtime_ns
    assert cli(*args).returncode == 0
    assert policy.stat().st_mtime_ns == first  # not retrained
    # a changed input retrains
    assert cli(*args[:-2], "--method-arg", "beta=0.5", "--output-dir", str(out)).returncode == 0
    assert policy.stat().st_mtime_ns != first



def test_a_methods_rising_code_version_retrains_its_policy_alone(tmp_path, monkeypatch):
    """The bandit's training stage is keyed by the method object itself: a method whose loss code
    changed (its ``code_version`` raised) retrains, and the other methods' policies stay."""
    from harness import registry
    from harness.cli import main

    out = tmp_path / "run"
    args = ["run", "--task", "bandit", "--method", "dpo,ipo", "--behavior", "skewed", "--task-arg", "steps=200", "--output-dir", str(out)]
    assert main(args) == 0
    policies = {m: out / "policies" / f"{m}-skewed.json" for m in ("dpo", "ipo")}
    first = {m: p.stat().st_mtime_ns for m, p in policies.items()}
    monkeypatch.setattr(registry.methods.get("dpo"), "code_version", 1)
    assert main(args) == 0
    assert policies["dpo"].stat().st_mtime_ns != first["dpo"] and policies["ipo"].stat().st_mtime_ns == first["ipo"]

def test_config_file_sets_matrix_behaviors_beta_and_steps(tmp_path, cli):
    config = tmp_path / "bandit.yaml"
    config.write_text(
        "task: bandit\nmethods: [ipo]\nbehaviors: [mine]\n"
        "task_args:\n  pairs: 2000\n  steps: 300\n  behaviors: {mine: [0.5, 0.25, 0.25]}\n"
        "  matrix: [[0.5, 0.9, 0.9], [0.1, 0.5, 0.5], [0.1, 0.5, 0.5]]\n"
        "method_args: {beta: 2.0}\n"
    )
    out = tmp_path / "run"
    result = cli("run", "--config", str(config), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["best_arm"] for r in summary["results"]] == [0]
    saved = json.loads((out / "config.json").read_text())
    assert saved["resolved_method_args"]["ipo"]["beta"] == 2.0
    assert saved["resolved_task_args"]["steps"] == 300


def test_pairs_are_seeded_and_follow_the_behaviour_policy():
    task = build_task("bandit", {"pairs": 20000})
    w1, l1 = task.sample_pairs("skewed", seed=3)
    w2, l2 = task.sample_pairs("skewed", seed=3)
    assert (w1 == w2).all() and (l1 == l2).all()
    arms = np.concatenate([w1, l1])
    assert np.bincount(arms, minlength=3) / arms.size == pytest.approx([0.15, 0.7, 0.15], abs=0.01)
    # y0 beats y1 with probability 0.99
    pair01 = ((w1 == 0) & (l1 == 1)) | ((w1 == 1) & (l1 == 0))
    assert ((w1 == 0) & pair01).sum() / pair01.sum() == pytest.approx(0.99, abs=0.01)


BAD_RUNS = [
    (["--method", "srpp"], "unknown method 'srpp'; did you mean 'srpo'"),
    (["--task", "bandits"], "unknown task 'bandits'; did you mean 'bandit'"),
    (["--task-arg", "matrix=[[0.5, 0.5], [0.5, 0.5]]"], "matrix must be 3x3"),
    (["--task-arg", "matrix=[[0.5, 1.2, 0.3], [-0.2, 0.5, 0.25], [0.7, 0.75, 0.5]]"], "must lie in [0, 1]"),
    (["--task-arg", "matrix=[[0.5, 0.9, 0.3], [0.2, 0.5, 0.25], [0.7, 0.75, 0.5]]"], "P + P^T = 1"),
    (["--task-arg", "behaviors={odd: [0.5, 0.3, 0.3]}", "--behavior", "odd"], "sum to 1"),
    (["--behavior", "sideways"], "unknown behaviour 'sideways'"),
    (["--method-arg", "srpo.alpha=2"], "option 'alpha': input should be less than or equal to 1 (got 2)"),
    (["--task-arg", "stepz=3"], "did you mean 'steps'"),
]


@pytest.mark.parametrize("extra, message", BAD_RUNS)
def test_user_errors_fail_clearly_without_a_run_folder(tmp_path, cli, extra, message):
    out = tmp_path / "run"
    base = {"--task": "bandit", "--method": "srpo"}
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in base:
            base[flag] = value
    args = [a for kv in base.items() for a in kv] + [a for f, v in zip(extra[::2], extra[1::2]) if f not in base for a in (f, v)]
    result = cli("run", *args, "--output-dir", str(out))
    assert result.returncode == 2
    assert message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3  # one message (rich may wrap it)
    assert not out.exists()


L1_TOLERANCE = 0.05  # 10,000 sampled pairs: the learned policy sits within this L1 of the optimum of the expected loss


def test_learned_policies_reach_the_optimum_of_their_own_loss(tmp_path, cli):
    out = tmp_path / "run"
    result = cli("run", "--task", "bandit", "--method", "srpo,dpo,ipo", "--method-arg", "alpha=0,0.5", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "summary.json").read_text())["results"]
    assert {r["method"] for r in rows} == {"srpo[alpha=0]", "srpo[alpha=0.5]", "dpo", "ipo"}  # the sweep runs as rows
    for r in rows:
        if r["method"] == "srpo[alpha=0]":
            assert r["optimum"] is None and "leaves pi(y) free" in r["optimum_from"]  # said, not pretended
            continue
        assert r["l1_to_optimum"] < L1_TOLERANCE, r
        assert r["optimum_from"] == ("numerical minimiser of its expected loss under mu" if r["method"] == "dpo" else "closed form")
    skewed = {r["method"]: r for r in rows if r["behavior"] == "skewed"}
    assert np.argmax(skewed["srpo[alpha=0.5]"]["optimum"]) == 2 and np.argmax(skewed["ipo"]["optimum"]) == 0  # Fig. 2 from the optima
    html = (out / "leaderboard.html").read_text()
    assert "L1 to optimum" in html and "optimum pi*" in html and "alpha = 0" in html


def test_closed_forms_are_the_minimisers_of_the_expected_losses():
    from harness.method import build_method
    from harness.policies.optima import closed_form, minimise_expected_loss
    from harness.tasks.bandit import PAPER_BEHAVIORS, PAPER_MATRIX

    for mu in PAPER_BEHAVIORS.values():
        for name, options in (("ipo", {"beta": 1.0}), ("ipo", {"beta": 0.5}), ("srpo", {"beta": 1.0, "alpha": 0.5}), ("srpo", {"beta": 2.0, "alpha": 0.2})):
            method = build_method(name, options)
            assert np.abs(closed_form(method, PAPER_MATRIX, mu) - minimise_expected_loss(method, PAPER_MATRIX, mu)).sum() < 1e-4, (name, options)
    srpo = build_method("srpo", {"beta": 1.0, "alpha": 0.5})
    uniform, skewed = (closed_form(srpo, PAPER_MATRIX, mu) for mu in PAPER_BEHAVIORS.values())
    assert np.allclose(uniform, skewed)  # SRPO's optimum does not depend on the behaviour policy
