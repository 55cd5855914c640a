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


def is_synthetic(summary: dict) -> bool:
    """Whether ``summary`` is a synthetic task's (the bandit's): a learned policy per row, win rates
    computed exactly, and no generations or verdicts beside it."""
    return any("policy" in row for row in summary["results"])


def text_summary(folder: str | Path) -> dict:
    """``read_summary`` of a text run, the kind whose generations and verdicts the commands after
    a run read; a synthetic task's run says where its numbers are instead."""
    summary = read_summary(folder)
    if is_synthetic(summary):
        raise HarnessError(f"{folder} is a run of the synthetic task {summary['task']!r}: its win rates are exact, with no verdicts "
                           f"to judge or rescore; its tables are in its summary.json and on its page (harness leaderboard {folder})")  # fmt: skip
    return summary


@dataclass
class Run:
    """A finished text run, as data. Every table is a pandas DataFrame:

    - ``examples``: id, source, reference, in test-split order
    - ``generations``: one row per (example, method, revision): text, token counts, finish reason
    - ``judgments``: one row per verdict of every judge (``judge``, ``primary``), with both texts'
      lengths and each order's raw verdict (``harness.stages.score.verdict_frame``)
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
        scores, paired = score_verdicts(self.judgments[self.judgments["primary"]], config)
        return dataclasses.replace(self, scores=scores, paired=paired)


def judged_by(folder: Path, manifest: dict, examples: list[dict], generations: list[dict]) -> list:
    """Every judge that judged in the folder (the manifest's ``inputs.judges``), with its verdicts
    of these examples' current texts; the run's own judge (``inputs.judge``) is the primary."""
    from harness.stages.judge import current_judgments
    from harness.stages.score import JudgedBy

    inputs = manifest.get("inputs", {})
    primary = (inputs.get("judge") or {}).get("fingerprint")
    ids = {str(e["id"]) for e in examples}
    keys = {(g["example_id"], g["method"], g["revision"]) for g in generations}
    out = []
    judges = inputs.get("judges") or ({primary: inputs["judge"]} if primary else {})  # a folder of an older harness: its one judge
    for fingerprint, info in judges.items():
        verdicts = [j for j in current_judgments(Path(folder), fingerprint)
                    if j["example_id"] in ids and (j["example_id"], j["method"], j["revision"]) in keys]  # fmt: skip
        out.append(JudgedBy(fingerprint, info.get("config", {}), verdicts, fingerprint == primary))
    return sorted(out, key=lambda j: not j.primary)


def run_records(folder: str | Path) -> tuple[dict, list[dict], list[dict], list]:
    """(summary, examples, generations, judges) of a run folder: the examples in test-split
    order, the generations the summary scored, and each judge's verdicts of them (``JudgedBy``;
    older verdicts the folder keeps for texts since regenerated are left out)."""
    from harness.stages.generate import GENERATIONS

    folder = Path(folder)
    summary = text_summary(folder)
    meta = summary["meta"]
    by_id = {e["id"]: e for e in read_jsonl(folder / "examples.jsonl")}
    examples = [by_id[i] for i in meta.get("example_ids", []) if i in by_id]
    ids = {e["id"] for e in examples}
    methods = {r["method"] for r in summary["results"]}
    revisions = meta.get("revisions", max((r["revision"] for r in summary["results"]), default=0))
    generations = [g for g in read_jsonl(folder / GENERATIONS) if g["example_id"] in ids and g["method"] in methods and g["revision"] <= revisions]
    manifest = RunStore(folder).read_json("manifest.json") or {"inputs": meta.get("inputs", {})}
    return summary, examples, generations, judged_by(folder, manifest, examples, generations)


def load_run(folder: str | Path) -> Run:
    """A run folder's examples, generations, verdicts and scores as DataFrames (see ``Run``)."""
    from harness.stages.score import judge_labels, verdict_frame

    summary, examples, generations, judges = run_records(folder)
    labels = judge_labels(judges)
    frames = [verdict_frame(j.verdicts, generations, examples).assign(judge=labels[j.fingerprint], primary=j.primary) for j in judges]
    judgments = pd.concat(frames, ignore_index=True) if frames else verdict_frame([], generations, examples)
    return Run(Path(folder), summary, pd.DataFrame(examples), pd.DataFrame(generations), judgments,
               pd.DataFrame(summary["results"]), pd.DataFrame(summary.get("paired", [])))  # fmt: skip
