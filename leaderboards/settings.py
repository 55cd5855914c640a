"""What tells runs apart on one page. A sweep is several runs of one method (`--method-arg beta=0.5`
in one, `--limit 64` in another), each in a folder named by its config's hash; the page names each
run's rows by the settings in which its config differs from the other runs', "srpo (beta=0.5,
limit=64)", and by its folder only where no setting differs."""

from __future__ import annotations

import json
from collections import Counter

from harness.config import dotted

# Config keys that are not a run's settings (the methods it lists, the folder it is in) or that it
# holds resolved as well, where defaults are filled in and per-method values settled.
_NOT_SETTINGS = {"methods", "output_dir", "method_args", "train", "task_args", "resolved_method_args", "resolved_train", "resolved_task_args"}
_WIDTH = 32  # a value longer than this (a data file's path) is cut, with an ellipsis


def _flat(mapping: dict, prefix: str = "") -> dict[str, str]:
    """``{"sampling": {"top_p": 0.9}}`` as ``{"sampling.top_p": "0.9"}``: one entry per leaf (an
    empty mapping has none, so ``engine_args: {}`` and ``engine_args: {batch_size: 4}`` differ in
    ``engine_args.batch_size`` alone), its value as text, a long one cut."""
    texts = {key: value if isinstance(value, str) else json.dumps(value) for key, value in dotted(mapping, prefix).items()}
    return {key: text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…" for key, text in texts.items()}


def _run_settings(run: dict) -> dict[str, str]:
    config = run["summary"]["meta"].get("config") or {}
    shared = {k: v for k, v in config.items() if k not in _NOT_SETTINGS}
    return {**_flat(shared), **_flat(config.get("resolved_task_args") or {}, "task")}


def _method_settings(run: dict, method: str) -> dict[str, str]:
    """A method row's own options (unprefixed, as on the command line) and its trainer's (``train.``)."""
    config = run["summary"]["meta"].get("config") or {}
    options = (config.get("resolved_method_args") or {}).get(method) or {}
    return {**_flat(options), **_flat((config.get("resolved_train") or {}).get(method) or {}, "train")}


def _differing(settings: list[dict[str, str]]) -> list[str]:
    """The keys whose values are not the same in every one of ``settings`` (absent counts as a value)."""
    keys = dict.fromkeys(k for s in settings for k in s)
    return [k for k in keys if len({s.get(k, "-") for s in settings}) > 1]


def _text(settings: dict[str, str], keys: list[str]) -> str:
    return ", ".join(f"{k}={settings.get(k, '-')}" for k in keys)


def _told_apart(labels: dict, group, name) -> dict:
    """``labels`` where two in one ``group`` read the same (runs of one config in two folders) made
    apart by ``name``, their folders' names."""
    seen = Counter((group(key), text) for key, text in labels.items())
    return {key: ", ".join(filter(None, [text, name(key)])) if seen[(group(key), text)] > 1 else text for key, text in labels.items()}


def _run_texts(runs: list[dict]) -> dict[str, str]:
    """Each run's differing settings among the runs of its task (a page groups runs by task, whose
    options differ anyway)."""
    out = {}
    for task in dict.fromkeys(r["summary"]["task"] for r in runs):
        settings = {r["name"]: _run_settings(r) for r in runs if r["summary"]["task"] == task}
        keys = _differing(list(settings.values()))
        out.update({name: _text(s, keys) for name, s in settings.items()})
    return out


def run_labels(runs: list[dict]) -> dict[str, str]:
    """Each run's name -> the settings that set it apart from the other runs ("" where it is alone)."""
    task = {r["name"]: r["summary"]["task"] for r in runs}
    return _told_apart(_run_texts(runs), task.get, lambda name: name)


def row_labels(runs: list[dict]) -> dict[tuple[str, str], str]:
    """(run name, method row) -> what sets the row apart from the same method's rows in the other
    runs: the run's differing settings, then the method's own (its ``beta``, its trainer's
    ``train.lr``); "" where it is alone."""
    by_run = _run_texts(runs)
    rows = {(r["name"], m): r for r in runs for m in dict.fromkeys(x["method"] for x in r["summary"]["results"])}
    labels = {}
    for (name, method), run in rows.items():
        task = run["summary"]["task"]
        own = {n: _method_settings(r, method) for (n, m), r in rows.items() if m == method and r["summary"]["task"] == task}
        labels[(name, method)] = ", ".join(filter(None, [by_run[name], _text(own[name], _differing(list(own.values())))]))
    return _told_apart(labels, lambda key: (rows[key]["summary"]["task"], key[1]), lambda key: key[0])
