"""The judging stage: every completion against its reference, and methods head to head.

Pairs go to the judge in chunks of ``chunk`` (both orders: twice as many comparisons), small
enough for steady progress and persistence, large enough to keep an API judge's requests in flight.

Verdicts are appended to ``judgments.jsonl`` chunk by chunk, tagged with a hash of the judge's
configuration and prompts; a rerun (or a resumed run) judges only what is missing, and the
judge's own cache keeps even those from costing a request twice.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from tqdm.auto import tqdm

from harness.config import stable_hash
from harness.judge import Judge, judge_pairs, prompt_template
from harness.store import RunStore, read_jsonl
from harness.task import TextTask

JUDGMENTS = "judgments.jsonl"
REFERENCE = "reference"


def judge_fingerprint(judge: Judge, family: str, both_orders: bool) -> str:
    return stable_hash({"judge": judge.describe_config(), "prompt": prompt_template(family), "both_orders": both_orders})


def judge_stage(
    store: RunStore, task: TextTask, judge: Judge, examples: list[dict], generations: list[dict], methods: list[str],
    head_to_head: bool, both_orders: bool, seed: int, console: Console, chunk: int = 32,
) -> list[dict]:
    fingerprint = judge_fingerprint(judge, task.family, both_orders)
    by_id = {str(ex["id"]): ex for ex in examples}
    text = {(g["example_id"], g["method"], g["revision"]): g["text"] for g in generations}
    wanted = []  # (example_id, revision, method, opponent, candidate text, opponent text)
    for (eid, method, rev), candidate in sorted(text.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        wanted.append((eid, rev, method, REFERENCE, candidate, by_id[eid]["reference"]))
    if head_to_head:
        revisions = sorted({k[2] for k in text})
        for rev, (x, y) in itertools.product(revisions, itertools.combinations(methods, 2)):
            for eid in by_id:
                if (eid, x, rev) in text and (eid, y, rev) in text:
                    wanted.append((eid, rev, x, y, text[(eid, x, rev)], text[(eid, y, rev)]))
    path = store.path(JUDGMENTS)
    # A verdict is reused only for the same judge and the very same two texts: regenerated
    # completions (other sampling, other weights) are judged again.
    rows = [r for r in read_jsonl(path) if r.get("judge") == fingerprint]
    done = {(r["example_id"], r["revision"], r["method"], r["opponent"], r.get("texts")) for r in rows}
    todo = [w for w in wanted if (*w[:4], _texts_hash(w)) not in done]
    stats: dict[str, float] = {}
    bar = tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc=f"judge ({judge.registered_name})", unit="pair")
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        items = [(task.family, task.instruction, task.judge_source(by_id[w[0]]), w[4], w[5]) for w in part]
        verdicts = judge_pairs(judge, items, both_orders=both_orders, seed=seed)
        for key, value in judge.stats.items():
            stats[key] = stats.get(key, 0) + value
        new = [
            {"example_id": w[0], "revision": w[1], "method": w[2], "opponent": w[3], "preference": v.preference,
             "error": v.error, "orders": [asdict(o) for o in v.orders], "judge": fingerprint, "texts": _texts_hash(w)}
            for w, v in zip(part, verdicts)
        ]  # fmt: skip
        with path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
        rows.extend(new)
        bar.update(len(part))
    bar.close()
    failed = sum(1 for r in rows if r["preference"] is None)
    store.record_input("judge", {"config": judge.describe_config(), "fingerprint": fingerprint, "both_orders": both_orders,
                                 "proxy": judge.is_proxy(), "stats_this_run": stats, "failed_verdicts": failed})  # fmt: skip
    if failed:
        console.print(f"[yellow]{failed} verdict(s) failed and are left out of the scores (see {path})[/yellow]")
    if stats:
        console.print("judge: " + ", ".join(f"{k} {v:g}" for k, v in stats.items()), highlight=False)
    keep = {(*w[:4], _texts_hash(w)) for w in wanted}
    return [r for r in rows if (r["example_id"], r["revision"], r["method"], r["opponent"], r.get("texts")) in keep]


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

    return [j for j in read_jsonl(folder / JUDGMENTS) if j.get("judge") == fingerprint and j.get("texts") == judged_texts(j)]
