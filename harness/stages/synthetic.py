"""Synthetic tasks: sample pairs per behaviour policy -> train a tabular policy per method -> exact
oracle win rates -> leaderboard. Every step is a stage of the run store, so a rerun of the same
config redoes nothing and a crashed run resumes at the first unfinished stage.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from harness.policies.optima import optimum
from harness.policies.tabular import train_tabular
from harness.runconfig import ResolvedRun
from harness.store import RunStore
from harness.judges.oracle import OracleJudge


def run_synthetic(resolved: ResolvedRun, console: Console) -> RunStore:
    task, seed = resolved.task, resolved.seed
    behaviors = resolved.behaviors or list(task.behaviors)
    store = RunStore.open(resolved.output_dir, resolved.config, seed)
    console.print(f"run folder: {store.root}")
    judge = OracleJudge(task.matrix)
    uniform = np.full(task.n_arms, 1.0 / task.n_arms)
    rows = []
    jobs = [(b, m) for b in behaviors for m in resolved.methods]
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for behavior, name in tqdm(jobs, desc="train", unit="policy"):
        if behavior not in data:
            data[behavior] = _pairs(store, task, behavior, seed)
        method = resolved.methods[name]
        artifact = f"policies/{name}-{behavior}.json"
        stage = store.stage(
            f"train/{name}-{behavior}",
            {"data": store.read_json(f"stages/data/{behavior}.json")["key"], "method": method,  # its class, code version and options
             "steps": task.steps, "lr": task.lr, "seed": seed},
        )  # fmt: skip
        if not stage.done:
            stage.begin()
            winners, losers = data[behavior]
            policy, curve = train_tabular(method, winners, losers, task.n_arms, task.steps, task.lr, seed)
            store.write_json(artifact, {
                "policy": policy.probabilities().tolist(),
                "revision_policy": policy.revision_probabilities().tolist(),
                "final_loss": curve[-1], "loss_curve": curve[:: max(1, len(curve) // 200)],
            })  # fmt: skip
            stage.finish([artifact])
        trained = store.read_json(artifact)
        pi = np.asarray(trained["policy"])
        best, how = optimum(method, task.matrix, task.behaviors[behavior])
        rows.append({
            "method": name, "behavior": behavior, "policy": trained["policy"],
            "best_arm": int(pi.argmax()), "win_rate": judge.preference(pi, uniform),
            "final_loss": trained["final_loss"], "revision_policy": trained["revision_policy"],
            "optimum": None if best is None else best.tolist(), "optimum_from": how,
            "l1_to_optimum": None if best is None else float(np.abs(pi - best).sum()),
        })  # fmt: skip
    summary = {
        "task": task.registered_name,
        "results": rows,
        "meta": {"judge": "oracle (exact expected preference from P)", "seed": seed, "config": resolved.config},
    }
    _finish(store, summary, console)
    table = Table(title=f"{summary['task']}: learned policies and where the loss says they should end")
    for col in ("method", "behaviour", "pi(y)", "best arm", "win rate vs uniform", "optimum pi*(y)", "L1 to optimum"):
        table.add_column(col)
    for r in rows:
        best = " ".join(f"{p:.3f}" for p in r["optimum"]) if r["optimum"] else "-"
        table.add_row(r["method"], r["behavior"], " ".join(f"{p:.3f}" for p in r["policy"]), f"y{r['best_arm']}", f"{r['win_rate']:.3f}",
                      best, f"{r['l1_to_optimum']:.4f}" if r["l1_to_optimum"] is not None else "-")  # fmt: skip
    console.print(table)
    return store


def _pairs(store: RunStore, task, behavior: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    artifact = f"data/{behavior}.json"
    stage = store.stage(f"data/{behavior}", {"matrix": task.matrix, "mu": task.behaviors[behavior], "pairs": task.pairs, "seed": seed})
    if not stage.done:
        stage.begin()
        winners, losers = task.sample_pairs(behavior, seed)
        store.write_json(artifact, {"winners": winners.tolist(), "losers": losers.tolist()})
        stage.finish([artifact])
        store.record_input(f"pairs/{behavior}", {"source": "sampled", "rows": int(len(winners)), "hash": stage.key_hash})
    saved = store.read_json(artifact)
    return np.asarray(saved["winners"]), np.asarray(saved["losers"])


def _finish(store: RunStore, summary: dict, console: Console) -> None:
    from harness.leaderboards.render import write_pages

    store.write_json("summary.json", summary)
    page = write_pages(store.path("leaderboard.html"), [(summary, store.root)])
    console.print(f"summary: {store.path('summary.json')}")
    console.print(f"leaderboard: {page}")
