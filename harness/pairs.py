"""Preference pairs the harness builds, and behaviour skew for the robustness experiments.

Built pairs are ordinary preference rows (the task's fields, ``chosen``, ``rejected``) plus a
``provenance`` object saying where each side came from, saved as JSONL that any task loads back
through ``data_files.preference``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from harness.errors import HarnessError
from harness.store import atomic_write_text

EXAMPLE_KEYS_EXCLUDED = ("reference", "chosen", "rejected", "provenance")


def _example_fields(example: dict) -> dict:
    return {k: v for k, v in example.items() if k not in EXAMPLE_KEYS_EXCLUDED}


def gold_vs_policy(examples: list[dict], completions: dict[str, str], policy: str) -> list[dict]:
    """Gold reference as ``chosen``, the policy's completion as ``rejected`` (a policy sample rarely
    beats a human reference; use ``judged`` when that assumption does not hold)."""
    pairs = []
    for ex in examples:
        text = (completions.get(str(ex["id"])) or "").strip()
        if not text or text == ex["reference"].strip():
            continue  # an empty or identical completion teaches nothing
        pairs.append({**_example_fields(ex), "chosen": ex["reference"], "rejected": text,
                      "provenance": {"chosen": "gold", "rejected": policy}})  # fmt: skip
    return pairs


def judged(
    examples: list[dict], samples_a: dict[str, str], samples_b: dict[str, str], preferences: dict[str, float],
    labels: tuple[str, str], judge: str,
) -> tuple[list[dict], int]:
    """Two policy samples per example, ordered by a judge's preference p(A > B); ties are dropped.
    Returns the pairs and the number of ties dropped."""
    pairs, ties = [], 0
    for ex in examples:
        key = str(ex["id"])
        if key not in preferences:
            continue
        p = preferences[key]
        if p == 0.5:
            ties += 1
            continue
        a, b = samples_a[key], samples_b[key]
        chosen, rejected, sides = (a, b, labels) if p > 0.5 else (b, a, labels[::-1])
        pairs.append({**_example_fields(ex), "chosen": chosen, "rejected": rejected,
                      "provenance": {"chosen": sides[0], "rejected": sides[1], "judge": judge, "p_a_over_b": p}})  # fmt: skip
    return pairs, ties


def save_pairs(path: Path, pairs: list[dict], builder: dict) -> Path:
    """JSONL of pairs plus ``<name>.meta.json`` describing how they were built."""
    if not pairs:
        raise HarnessError(f"no pairs to save to {path}: every candidate was empty, identical or tied")
    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    atomic_write_text(path.with_suffix(".meta.json"), json.dumps({**builder, "rows": len(pairs)}, indent=2) + "\n")
    return path


def length_bucket(row: dict, edges: tuple[int, ...] = (20, 40)) -> str:
    """Buckets of the chosen completion's length in words: a ready-made skew key."""
    n = len(row["chosen"].split())
    return "short" if n < edges[0] else "medium" if n < edges[1] else "long"


def skew(pairs: list[dict], by: str | Callable[[dict], object], weights: dict, n: int, seed: int) -> list[dict]:
    """Resample ``n`` pairs with replacement so that the key ``by`` (a field name, ``"length"``,
    or a function of the row) follows the target ``weights`` (normalised; unlisted values get 0).

    This is the real-task analogue of Sec. 5's mu1: the same pairs, another behaviour policy."""
    key = length_bucket if by == "length" else by if callable(by) else (lambda row: _field(row, by))
    values = np.array([str(key(row)) for row in pairs])  # [N]
    target = {str(k): float(v) for k, v in weights.items()}
    if not target or min(target.values()) < 0 or sum(target.values()) <= 0:
        raise HarnessError(f"skew weights must be non-negative with a positive sum, got {weights}")
    present = set(values.tolist())
    missing = [k for k, w in target.items() if w > 0 and k not in present]
    if missing:
        raise HarnessError(f"skew by {by!r}: no pair has value {missing[0]!r} (values: {', '.join(sorted(present))})")
    counts = {v: int((values == v).sum()) for v in present}
    p = np.array([target.get(v, 0.0) / counts[v] for v in values])  # each value's mass shared by its rows
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pairs), size=n, replace=True, p=p / p.sum())
    return [pairs[i] for i in idx]


def _field(row: dict, dotted: str):
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise HarnessError(f"skew key {dotted!r} is not a field of the pairs (fields: {', '.join(sorted(row))})")
        value = value[part]
    return value
