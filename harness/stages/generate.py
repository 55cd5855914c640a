"""The revision loop: revision 0 from the 0-revision prompt, revision k from the N-revision prompt
with revision k-1 in context, for every method (baselines are revised in context too, as in Sec. 6).

Every completion is appended to ``generations.jsonl`` as soon as its chunk is generated, with a
key: the hash of what it was generated from (the candidate's ``GenerationInputs``, its example, its
revision and the in-context text it revised). A rerun reuses exactly the rows whose key still
holds, so a new model, option or revision k-1 text regenerates what depends on it and nothing
else; rows that no longer hold move to ``generations.stale.jsonl``. Rows that a run folder beside
this one holds with keys that hold here are copied (a method added to a comparison, a folder of
its own, leaves the others' completions to be taken). Each completion's sampling
seed is a function of the run's seed, its example id, its method and its revision, never of its
place in a batch, so a killed generation resumes to the texts it would have had.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from tqdm.auto import tqdm

from harness.config import stable_hash
from harness.engine import Engine, SamplingParams
from harness.models import ModelRef, model_ref
from harness.store import RunStore
from harness.task import TextTask

GENERATIONS = "generations.jsonl"
STALE = "generations.stale.jsonl"


@dataclass(frozen=True)
class Candidate:
    method: str  # the name rows carry
    model: ModelRef  # what the engine loads (the base, the SFT model, or a fully fine-tuned model)
    adapter: ModelRef | None  # trained LoRA adapter on top of ``model``, or None
    prompt_format: str = "auto"  # the prompt format this method was trained with


@dataclass(frozen=True)
class GenerationInputs:
    """What every completion of one candidate reads, besides its example and in-context text."""

    engine: dict  # the engine's describe_config(): its name and every option that can change a text
    sampling: SamplingParams
    task: TextTask
    candidate: Candidate


class OneModelAtATime:
    """The engine holding a candidate's model, built on first use; building another model's engine
    closes the one before, so that one model at a time occupies the accelerator (methods trained in
    full have a model each). ``generate_revisions`` goes model by model, so each loads once."""

    def __init__(self, build: Callable[[str], Engine]):
        self.build = build  # model path -> its engine
        self.path: str | None = None
        self.engine: Engine | None = None

    def __call__(self, candidate: Candidate) -> Engine:
        if candidate.model.path != self.path:
            self.close()
            self.engine, self.path = self.build(candidate.model.path), candidate.model.path
        return self.engine  # type: ignore[return-value]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = self.path = None


def item_seed(seed: int, example_id: str, method: str, revision: int) -> int:
    """The sampling seed of one completion: its identity, not its position."""
    return int(hashlib.sha256(f"{seed}/{example_id}/{method}/{revision}".encode()).hexdigest()[:8], 16)


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def row_key(inputs_key: str, example: dict, revision: int, previous: str | None) -> str:
    """One completion's key. The revision is in it besides the text revised: a model that repeats
    that text gives revisions k and k+1 the same prompt, yet each has its own sampling seed."""
    return stable_hash([inputs_key, example, revision, previous])


def _from_neighbours(store: RunStore, rows: list[dict], examples: list[dict], inputs: dict[str, GenerationInputs],
                     revisions: int) -> dict[Path, list[dict]]:
    """The rows this run lacks that run folders beside it hold with keys that hold here (a method
    trained on the same inputs, its adapter copied: ``Stage.copy_from_neighbour``), by folder;
    each names this run's model and adapter. A chain is walked from revision 0 as ``_current``
    does, across folders: revision k may come from one folder and k-1 from here. Greedy
    completions are found under another name too (``_renamed``)."""
    keys = {method: stable_hash(i) for method, i in inputs.items()}
    candidates = [i.candidate for i in inputs.values()]
    have = {r.get("key") for r in rows}
    found: dict[str, tuple[Path, dict]] = {}
    holds = lambda other: _holds_a_model_of(other, store, candidates)  # noqa: E731  -- a key holds only where the weights are the same files
    for folder, theirs in store.neighbour_rows(GENERATIONS, holds):
        for row in [*theirs, *_renamed(theirs, examples, inputs)]:
            if row.get("method") in keys and row.get("key") not in have:
                found.setdefault(row.get("key"), (folder, row))
    if not found:
        return {}
    by_method = {c.method: c for c in candidates}
    out: dict[Path, list[dict]] = {}
    for (_, method, revision), row in _current(rows + [row for _, row in found.values()], examples, keys).items():
        if revision <= revisions and row["key"] in found:
            cand = by_method[method]
            out.setdefault(found[row["key"]][0], []).append({**row, "model": cand.model.path, "adapter": cand.adapter.path if cand.adapter else None})
    return out


def _renamed(theirs: list[dict], examples: list[dict], inputs: dict[str, GenerationInputs]) -> list[dict]:
    """The completions of a greedy candidate of ``inputs`` that a neighbour's log holds under
    another name (``srpo`` there is ``srpo[alpha=0]`` in a sweep here, its training copied), under
    this run's name, seed and key: a greedy text reads no seed, so the name is all that differs.
    A sampled one reads a seed drawn from its name, and is generated again."""
    by_id = {str(ex["id"]): ex for ex in examples}
    names = {r.get("method") for r in theirs} - set(inputs)
    out = []
    for ours, mine in inputs.items():
        if not mine.sampling.greedy:
            continue
        key = stable_hash(mine)
        for name in names:
            as_named = dataclasses.replace(mine, candidate=dataclasses.replace(mine.candidate, method=name))
            chain = _current(theirs, examples, {name: stable_hash(as_named)})
            for (eid, _, revision), row in chain.items():
                previous = None if revision == 0 else chain[(eid, name, revision - 1)]["text"]
                out.append({**row, "method": ours, "seed": item_seed(mine.sampling.seed, eid, ours, revision),
                            "key": row_key(key, by_id[eid], revision, previous)})  # fmt: skip
    return out


def _holds_a_model_of(other: RunStore, store: RunStore, candidates: list[Candidate]) -> bool:
    """Whether the run folder ``other`` holds, where ``store`` holds it or under another name of
    its group (``train/NAME/adapter``), a model that one of ``candidates`` generates from, with the
    same files: only then can its completions' keys hold here, and its log (thousands of rows at
    the paper's scale) is worth reading."""
    for cand in candidates:
        ref = cand.adapter or cand.model
        try:
            relative = Path(ref.path).relative_to(store.root)
        except ValueError:  # a model outside the run folder: its completions may be in any folder
            return True
        places = [other.root / relative]
        if len(relative.parts) > 2:  # train/NAME/adapter: the same weights may be there as train/OTHER/adapter
            places += [folder.joinpath(*relative.parts[2:]) for folder in sorted((other.root / relative.parts[0]).glob("*"))]
        if ref.fingerprint and any(model_ref(str(place)).fingerprint == ref.fingerprint for place in places):
            return True
    return False


def _current(rows: list[dict], examples: list[dict], keys: dict[str, str]) -> dict[tuple, dict]:
    """The rows whose key holds, by (example id, method, revision): walk each chain from revision
    0, where a revision holds only when its key matches the text of the revision it revised."""
    by_key = {r.get("key"): r for r in rows}
    current = {}
    for method, inputs_key in keys.items():
        for ex in examples:
            previous, revision = None, 0
            while (row := by_key.get(row_key(inputs_key, ex, revision, previous))) is not None:
                current[(str(ex["id"]), method, revision)] = row
                previous, revision = row["text"], revision + 1
    return current


def generate_revisions(
    store: RunStore, task: TextTask, prompts_by: Engine, engine_for: Callable[[Candidate], Engine], engine: dict,
    examples: list[dict], candidates: list[Candidate], revisions: int, params: SamplingParams, chunk_size: int | None = None,
    console: Console | None = None,
) -> list[dict]:
    """Generate revisions 0..``revisions`` for every candidate; returns their rows.
    ``prompts_by`` builds every candidate's prompts (``Engine.prompt_formatter``: they share the
    base tokenizer); ``engine_for`` gives the engine holding a candidate's model
    (``OneModelAtATime``); ``engine`` is its identity (``Engine.describe_config``), as the rows'
    keys record it. Rows that a run folder beside this one generated from the same inputs are
    copied rather than generated again (``console`` says from where)."""
    log = store.log(GENERATIONS)
    inputs = {c.method: GenerationInputs(engine, params, task, c) for c in candidates}
    keys = {method: stable_hash(i) for method, i in inputs.items()}
    rows = log.read()
    done = _current(rows, examples, keys)
    ids = {str(ex["id"]) for ex in examples}
    # rows of these examples and methods whose inputs changed: kept aside, never mixed with these
    # (rows of other examples or methods stay: a later run with them checks their keys then)
    kept = {id(r) for r in done.values()} | {id(r) for r in rows if r["example_id"] not in ids or r["method"] not in keys}
    if len(kept) < len(rows):
        store.log(STALE).append([r for r in rows if id(r) not in kept])
        log.rewrite([r for r in rows if id(r) in kept])
    total = (revisions + 1) * len(candidates) * len(examples)
    if sum(1 for k in done if k[2] <= revisions) < total:
        copied = _from_neighbours(store, [r for r in rows if id(r) in kept], examples, inputs, revisions)
        for source, theirs in copied.items():
            log.append(theirs)
            done.update({(r["example_id"], r["method"], r["revision"]): r for r in theirs})
            if console is not None:
                console.print(f"generations: {len(theirs)} generated from the same inputs in {source}; copied, not generated again")
    formatters = {c.method: prompts_by.prompt_formatter(task, c.prompt_format) for c in candidates}
    bar = tqdm(total=total, initial=sum(1 for k in done if k[2] <= revisions), desc="generate", unit="completion")
    first_use = {}  # model path -> the position of its first candidate
    for i, cand in enumerate(candidates):
        first_use.setdefault(cand.model.path, i)
    # model by model (candidates sharing a base with their adapters stay together), each candidate's
    # revisions in turn: revision k reads its own method's revision k-1 only, and an engine is needed
    # for one stretch only (OneModelAtATime)
    for cand in sorted(candidates, key=lambda c: first_use[c.model.path]):
        for revision in range(revisions + 1):
            formatter = formatters[cand.method]
            missing = [ex for ex in examples if (str(ex["id"]), cand.method, revision) not in done]
            size = chunk_size or engine_for(cand).chunk_size
            for start in range(0, len(missing), size):
                chunk = missing[start : start + size]
                previous = [None if revision == 0 else done[(str(ex["id"]), cand.method, revision - 1)]["text"] for ex in chunk]
                prompts = [formatter.prompt(ex) if prev is None else formatter.revision_prompt(ex, prev) for ex, prev in zip(chunk, previous)]
                seeds = [item_seed(params.seed, str(ex["id"]), cand.method, revision) for ex in chunk]
                adapter = cand.adapter.path if cand.adapter else None
                outputs = engine_for(cand).generate(prompts, params, adapter, task.stop, seeds, chat=formatter.use_chat)
                new = []
                for ex, prev, prompt, seed, gen in zip(chunk, previous, prompts, seeds, outputs):
                    row = {"example_id": str(ex["id"]), "method": cand.method, "revision": revision, "text": gen.text,
                           "prompt_hash": prompt_hash(prompt), "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                           "finish_reason": gen.finish_reason, "seed": seed, "sampling": params.as_dict(), "engine": engine,
                           "model": cand.model.path, "adapter": adapter, "key": row_key(keys[cand.method], ex, revision, prev)}  # fmt: skip
                    done[(row["example_id"], cand.method, revision)] = row
                    new.append(row)
                log.append(new)
                bar.update(len(new))
    bar.close()
    return [done[k] for k in sorted(done, key=lambda k: (k[2], k[1], k[0])) if k[2] <= revisions]
