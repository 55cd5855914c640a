"""The revision loop: revision 0 from the 0-revision prompt, revision k from the N-revision prompt
with revision k-1 in context, for every method (baselines are revised in context too, as in Sec. 6).

Every completion is appended to ``generations.jsonl`` as soon as its chunk is generated. Chunks
are fixed slices of the example list with a seed of their own, so a killed generation resumes by
regenerating only the chunks it lacks, gets the same texts it would have, and ends with exactly
one row per (example, method, revision).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from harness.config import stable_hash
from harness.engine import Engine, SamplingParams
from harness.prompting import PromptFormatter
from harness.store import RunStore, read_jsonl

GENERATIONS = "generations.jsonl"


@dataclass(frozen=True)
class Candidate:
    method: str  # the name rows carry
    model: str  # the model the engine loads (the base, the SFT model, or a fully fine-tuned model)
    adapter: str | None  # trained LoRA adapter folder on top of ``model``, or None


def _chunk_seed(seed: int, method: str, revision: int, chunk: int) -> int:
    digest = hashlib.sha256(f"{seed}/{method}/{revision}/{chunk}".encode()).hexdigest()
    return int(digest[:8], 16)


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def _append(path: Path, rows: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        fh.flush()
        os.fsync(fh.fileno())


def generate_revisions(
    store: RunStore, formatter: PromptFormatter, engine_for: Callable[[Candidate], Engine], engine_label: dict,
    examples: list[dict], candidates: list[Candidate], revisions: int, params: SamplingParams, chunk_size: int = 16,
) -> list[dict]:
    """Generate revisions 0..``revisions`` for every candidate; returns all rows.
    ``engine_for`` gives the engine holding a candidate's model (one per distinct model)."""
    path = store.path(GENERATIONS)
    key = {"engine": engine_label, "sampling": params.as_dict(), "task": formatter.task.registered_name,
           "task_options": dataclasses.asdict(formatter.task), "format": formatter.mode, "chunk_size": chunk_size,
           "examples": stable_hash([ex["id"] for ex in examples]),
           "candidates": [(c.method, c.model, c.adapter, _adapter_fingerprint(c.adapter or c.model)) for c in candidates]}  # fmt: skip
    key_path = store.path("generations.key.json")
    if path.exists() and (not key_path.exists() or json.loads(key_path.read_text()) != json.loads(json.dumps(key))):
        path.rename(path.with_name(f"generations.stale-{stable_hash(key)[:8]}.jsonl"))  # other inputs: keep, never mix
    store.write_json("generations.key.json", key)
    rows = read_jsonl(path)
    if path.exists():  # rewrite without a torn last line before appending
        store.write_text(GENERATIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    done = {(r["example_id"], r["method"], r["revision"]): r for r in rows}
    stop = formatter.task.stop
    total = (revisions + 1) * len(candidates) * len(examples)
    bar = tqdm(total=total, initial=sum(1 for k in done if k[2] <= revisions), desc="generate", unit="completion")
    for revision in range(revisions + 1):
        for cand in candidates:
            for c, start in enumerate(range(0, len(examples), chunk_size)):
                chunk = examples[start : start + chunk_size]
                missing = [ex for ex in chunk if (str(ex["id"]), cand.method, revision) not in done]
                if not missing:
                    continue
                prompts = [
                    formatter.prompt(ex) if revision == 0
                    else formatter.revision_prompt(ex, done[(str(ex["id"]), cand.method, revision - 1)]["text"])
                    for ex in chunk
                ]  # fmt: skip
                chunk_params = SamplingParams(params.temperature, params.top_p, params.max_new_tokens, _chunk_seed(params.seed, cand.method, revision, c))
                outputs = engine_for(cand).generate(prompts, chunk_params, cand.adapter, stop)
                new = []
                for ex, prompt, gen in zip(chunk, prompts, outputs):
                    k = (str(ex["id"]), cand.method, revision)
                    if k in done:
                        continue
                    row = {"example_id": k[0], "method": cand.method, "revision": revision, "prompt_hash": prompt_hash(prompt),
                           "text": gen.text, "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                           "finish_reason": gen.finish_reason, "sampling": chunk_params.as_dict(), "engine": engine_label,
                           "model": cand.model, "adapter": cand.adapter}  # fmt: skip
                    done[k] = row
                    new.append(row)
                _append(path, new)
                bar.update(len(new))
    bar.close()
    return [done[k] for k in sorted(done, key=lambda k: (k[2], k[1], k[0])) if k[2] <= revisions]


def _adapter_fingerprint(folder: str) -> str | None:
    """Changes when a local model's or adapter's weights change, so new weights never reuse old
    completions (a hub id has no local files and is taken as is)."""
    files = sorted(Path(folder).glob("*.safetensors")) or sorted(Path(folder).glob("*.bin"))
    if not files:
        return None
    return stable_hash([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])
