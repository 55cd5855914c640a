"""The judging stage: every completion against its reference, and methods head to head.

Pairs go to the judge in chunks (the judge's ``chunk_size``; both orders: twice as many
comparisons), small enough for steady progress and persistence, large enough to keep an API
judge's requests in flight.

Verdicts are appended to ``judgments.jsonl`` chunk by chunk, each tagged with the judge's
fingerprint (the hash of its ``JudgeInputs``) and the hash of the two texts it compared. A rerun
(or a resumed run) judges what has no successful verdict yet, failed ones included; the latest
verdict of a pair is the one that counts. A folder beside this one that the same judge judged
the same two texts in gives its verdict (a method added to a comparison, a folder of its own,
leaves the others' verdicts to be taken). The judge's usage (requests, tokens, cost) is appended
to ``judge-usage.jsonl`` chunk by chunk, so totals add up across reruns and crashes.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from tqdm.auto import tqdm

from harness.config import stable_hash
from harness.judge import Judge, judge_pairs, prompt_template
from harness.store import RunStore, read_jsonl
from harness.task import TextTask

JUDGMENTS = "judgments.jsonl"
USAGE = "judge-usage.jsonl"
REFERENCE = "reference"


@dataclass(frozen=True)
class JudgeInputs:
    """What a verdict is computed from besides its two texts: the judge (its model and options),
    the prompt it fills, and the position protocol."""

    judge: dict  # the judge's describe_config(): model, endpoint, sampling, parser
    prompt: str  # the prompt template's text
    both_orders: bool
    order_seed: int | None  # seeds the single-order coin; None when both orders are judged


def judge_fingerprint(judge: Judge, family: str, both_orders: bool, seed: int) -> str:
    return stable_hash(JudgeInputs(judge.describe_config(), prompt_template(family), both_orders, None if both_orders else seed))


def _identity(row: dict) -> tuple:
    return (row["example_id"], row["revision"], row["method"], row["opponent"], row.get("texts"))


def latest_verdicts(rows: list[dict], fingerprint: str) -> dict[tuple, dict]:
    """The latest verdict of each pair judged with ``fingerprint`` (a retried pair's last word)."""
    return {_identity(r): r for r in rows if r.get("judge") == fingerprint}


ON_THE_BAR = ("requests", "cache_hits", "failed", "cost_usd", "forward_passes")  # of a judge's stats, what its progress bar keeps summing


def _verdicts_from_neighbours(store: RunStore, fingerprint: str, needed: set[tuple]) -> dict[Path, list[dict]]:
    """Verdicts that run folders beside this one hold of the same judge (``fingerprint``: its model,
    options and prompt) on the same two texts, for the ``needed`` identities, by folder; only
    folders whose manifest lists that judge are read."""

    def judged_there(other: RunStore) -> bool:  # reads ``needed`` as the loop below shrinks it: once none is left, no log is read
        return bool(needed) and fingerprint in ((other.read_json("manifest.json") or {}).get("inputs", {}).get("judges") or {})

    out: dict[Path, list[dict]] = {}
    for folder, rows in store.neighbour_rows(JUDGMENTS, judged_there):
        found = [r for key, r in latest_verdicts(rows, fingerprint).items() if key in needed and r.get("preference") is not None]
        if found:
            out[folder] = found
            needed = needed - {_identity(r) for r in found}
    return out


def comparisons(example_ids: list[str], completed: set[tuple[str, str, int]], methods: list[str], head_to_head: bool) -> list[tuple[str, int, str, str]]:
    """(example id, revision, method, opponent) of every comparison the stage judges, given the
    (example id, method, revision) of each completion: each against its reference, then, with
    ``head_to_head``, each two methods at each revision on the examples both completed."""
    out = [(eid, rev, method, REFERENCE) for eid, method, rev in sorted(completed, key=lambda k: (k[2], k[1], k[0]))]
    if head_to_head:
        revisions = sorted({k[2] for k in completed})
        for rev, (x, y) in itertools.product(revisions, itertools.combinations(methods, 2)):
            out += [(eid, rev, x, y) for eid in example_ids if (eid, x, rev) in completed and (eid, y, rev) in completed]
    return out


def judge_stage(
    store: RunStore, task: TextTask, judge: Judge, examples: list[dict], generations: list[dict], methods: list[str],
    head_to_head: bool, both_orders: bool, seed: int, console: Console, chunk: int | None = None,
) -> tuple[str, list[dict]]:
    """Judge what has no verdict yet; returns the judge's fingerprint and its current verdicts.
    The manifest lists every judge that judged in this folder (``inputs.judges``)."""
    fingerprint = judge_fingerprint(judge, task.family, both_orders, seed)
    by_id = {str(ex["id"]): ex for ex in examples}
    text = {(g["example_id"], g["method"], g["revision"]): g["text"] for g in generations}
    wanted = [(eid, rev, method, opponent, text[(eid, method, rev)], by_id[eid]["reference"] if opponent == REFERENCE else text[(eid, opponent, rev)])
              for eid, rev, method, opponent in comparisons(list(by_id), set(text), methods, head_to_head)]  # + the two texts  # fmt: skip
    log = store.log(JUDGMENTS)
    # A verdict is reused only for the same judge and the very same two texts: regenerated
    # completions (other sampling, other weights) are judged again; failed verdicts are retried.
    verdicts = latest_verdicts(log.read(), fingerprint)
    identity = lambda w: (*w[:4], _texts_hash(w))  # noqa: E731
    todo = [w for w in wanted if verdicts.get(identity(w), {}).get("preference") is None]
    for source, rows in _verdicts_from_neighbours(store, fingerprint, {identity(w) for w in todo}).items():
        log.append(rows)
        verdicts.update({_identity(r): r for r in rows})
        console.print(f"judge: {len(rows)} verdicts of this judge on the same texts in {source}; copied, not asked again")
    todo = [w for w in todo if verdicts.get(identity(w), {}).get("preference") is None]
    bar = tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc=f"judge ({judge.registered_name})", unit="pair")
    usage = store.log(USAGE)
    spent: dict[str, float] = {}  # this judging's usage so far, on the bar: an hour of API calls shows its cost as it goes
    chunk = chunk or judge.chunk_size
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        items = [(task.family, task.instruction, task.judge_source(by_id[w[0]]), w[4], w[5]) for w in part]
        keys = ["/".join(map(str, w[:4])) for w in part]
        pair_verdicts = judge_pairs(judge, items, both_orders=both_orders, seed=seed, keys=keys)
        new = [
            {"example_id": w[0], "revision": w[1], "method": w[2], "opponent": w[3], "preference": v.preference,
             "error": v.error, "orders": [{**asdict(o), "candidate_first": first} for o, first in zip(v.orders, v.candidate_first)],
             "judge": fingerprint, "texts": _texts_hash(w)}
            for w, v in zip(part, pair_verdicts)
        ]  # fmt: skip
        log.append(new)
        if judge.stats:
            usage.append([{"judge": fingerprint, **judge.stats}])
            for key, value in judge.stats.items():
                if isinstance(value, (int, float)):
                    spent[key] = spent.get(key, 0) + value
            bar.set_postfix({key: f"{spent[key]:.4g}" for key in ON_THE_BAR if key in spent}, refresh=False)
        verdicts.update({_identity(r): r for r in new})
        bar.update(len(part))
    bar.close()
    current = [verdicts[identity(w)] for w in wanted]
    failed = sum(1 for r in current if r["preference"] is None)
    totals = usage_totals(store.root, fingerprint)
    judges = (store.read_json("manifest.json") or {}).get("inputs", {}).get("judges", {})
    store.record_input("judges", {**judges, fingerprint: {"config": judge.describe_config(), "fingerprint": fingerprint, "both_orders": both_orders,
                                                          "proxy": judge.is_proxy(), "usage": totals, "failed_verdicts": failed}})  # fmt: skip
    if failed:
        console.print(f"{failed} of {len(current)} verdict(s) failed and are left out of the scores (see {log.path}); a rerun retries them", style="yellow")
    if totals:
        console.print("judge: " + ", ".join(f"{k} {v:g}" for k, v in totals.items()))
    return fingerprint, current


def usage_totals(folder: Path, fingerprint: str) -> dict[str, float]:
    """The judge's usage summed over every chunk it judged in this folder, reruns included."""
    totals: dict[str, float] = {}
    for row in read_jsonl(Path(folder) / USAGE):
        if row.get("judge") == fingerprint:
            for key, value in row.items():
                if key != "judge" and isinstance(value, (int, float)):
                    totals[key] = round(totals.get(key, 0) + value, 6)
    return totals


def _texts_hash(item: tuple) -> str:
    return stable_hash([item[4], item[5]])


def current_judgments(folder: Path, fingerprint: str | None) -> list[dict]:
    """The verdicts of a run folder that judged its current generations with its current judge
    (a folder keeps older verdicts of texts it has since regenerated; those are left out)."""
    from harness.stages.generate import GENERATIONS

    references = {e["id"]: e["reference"] for e in read_jsonl(folder / "examples.jsonl")}
    texts = {(g["example_id"], g["method"], g["revision"]): g["text"] for g in read_jsonl(folder / GENERATIONS)}

    def judged_texts(j: dict) -> str:
        candidate = texts.get((j["example_id"], j["method"], j["revision"]))
        opponent = references.get(j["example_id"]) if j["opponent"] == REFERENCE else texts.get((j["example_id"], j["opponent"], j["revision"]))
        return stable_hash([candidate, opponent])

    latest = latest_verdicts(read_jsonl(folder / JUDGMENTS), fingerprint)
    return [j for j in latest.values() if j.get("texts") == judged_texts(j)]
