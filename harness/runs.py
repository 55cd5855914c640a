"""Run folders as data: what ``harness score``, ``harness leaderboard`` and a notebook read.

    import harness
    run = harness.load_run("runs/xsum-e1cab5e325")
    run.scores                      # win rates, CIs, length-controlled win rates, the paper's protocol
    run.judgments.groupby(["method", "revision"])["preference"].mean()
    harness.score_verdicts(run.judgments[run.judgments["revision"] <= 1])  # any subset, scored alike
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.store import RunStore, read_jsonl


def read_summary(folder: str | Path) -> dict:
    """A run folder's summary.json, checked for the shape every reader relies on."""
    folder = Path(folder)
    path = folder / "summary.json"
    if not folder.is_dir():
        raise HarnessError(f"{str(folder)!r} is not a folder: pass a run folder (one holding summary.json)")
    if not path.is_file():
        raise HarnessError(f"{str(path)!r} does not exist: is {str(folder)!r} a finished run folder?")
    summary = RunStore(folder).read_json("summary.json")
    problem = None
    if not isinstance(summary, dict):
        problem = f"it holds a {type(summary).__name__}, not an object"
    elif not isinstance(summary.get("task"), str):
        problem = "it has no task"
    elif not isinstance(summary.get("results"), list) or not all(isinstance(r, dict) for r in summary["results"]):
        problem = "its results are not a list of rows"
    elif not isinstance(summary.get("meta"), dict):
        problem = "it has no meta"
    if problem:
        raise HarnessError(f"{path} is not a summary the harness wrote ({problem}); rerun the run's command to write it again")
    return summary


@dataclass
class Run:
    """A finished text run, as data. Every table is a pandas DataFrame:

    - ``examples``: id, source, reference, in test-split order
    - ``generations``: one row per (example, method, revision): text, token counts, finish reason
    - ``judgments``: one row per verdict, with both texts' lengths (``harness.stages.score.verdict_frame``)
    - ``scores``: win rates per (method, opponent, revision), as summary.json holds them
    - ``paired``: paired differences of win rates on the same examples
    """

    path: Path
    summary: dict
    examples: pd.DataFrame
    generations: pd.DataFrame
    judgments: pd.DataFrame
    scores: pd.DataFrame
    paired: pd.DataFrame

    def rescore(self, **options) -> "Run":
        """The same verdicts scored with other options (``resamples``, ``level``, ``seed``...)."""
        from harness.config import build_options
        from harness.scoring import BootstrapConfig
        from harness.stages.score import score_verdicts

        config = build_options(BootstrapConfig, {**self.summary["meta"].get("bootstrap", {}), **options}, "bootstrap")
        scores, paired = score_verdicts(self.judgments, config)
        return dataclasses.replace(self, scores=scores, paired=paired)


def run_records(folder: str | Path) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """(summary, examples, generations, verdicts) of a run folder: the examples in test-split
    order, the generations and verdicts the summary scored (older ones the folder keeps for
    texts since regenerated, or for another judge, are left out)."""
    from harness.stages.generate import GENERATIONS
    from harness.stages.judge import current_judgments

    folder = Path(folder)
    summary = read_summary(folder)
    meta = summary["meta"]
    by_id = {e["id"]: e for e in read_jsonl(folder / "examples.jsonl")}
    examples = [by_id[i] for i in meta.get("example_ids", []) if i in by_id]
    ids = {e["id"] for e in examples}
    methods = {r["method"] for r in summary["results"]}
    revisions = meta.get("revisions", max((r["revision"] for r in summary["results"]), default=0))
    generations = [g for g in read_jsonl(folder / GENERATIONS) if g["example_id"] in ids and g["method"] in methods and g["revision"] <= revisions]
    fingerprint = (meta.get("inputs", {}).get("judge") or {}).get("fingerprint")
    judgments = [j for j in current_judgments(folder, fingerprint) if j["example_id"] in ids and j["method"] in methods and j["revision"] <= revisions]
    return summary, examples, generations, judgments


def load_run(folder: str | Path) -> Run:
    """A run folder's examples, generations, verdicts and scores as DataFrames (see ``Run``)."""
    from harness.stages.score import verdict_frame

    summary, examples, generations, judgments = run_records(folder)
    return Run(Path(folder), summary, pd.DataFrame(examples), pd.DataFrame(generations), verdict_frame(judgments, generations, examples),
               pd.DataFrame(summary["results"]), pd.DataFrame(summary.get("paired", [])))  # fmt: skip
