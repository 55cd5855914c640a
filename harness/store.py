"""The run store: one folder per run holding its config, manifest, artifacts and summary.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash leaves either the old file or the new one, never half of one. A stage records the hash of
its inputs in ``stages/<name>.json`` only after its artifacts are written: rerunning the same
config finds the record and skips the stage; a changed input gives a new hash and redoes it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import stable_hash

TRACKED_PACKAGES = (
    "preference-harness", "torch", "numpy", "scipy", "transformers", "peft", "accelerate",
    "datasets", "plotly", "openai", "vllm",
)  # fmt: skip


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's 0600 would hide runs from co-workers


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of an append-only JSONL file; a torn last line (a kill mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def open(cls, root: Path, config: dict, seed: int) -> "RunStore":
        """Create (or reopen) the run folder and snapshot the config and the environment."""
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(store.root / "config.json", config)
        manifest = store.read_json("manifest.json") or {}
        manifest.update(
            {
                "config_hash": stable_hash(config),
                "seed": seed,
                "versions": package_versions(),
                "platform": platform.platform(),
                "command": sys.argv,
                "updated": _now(),
            }
        )
        manifest.setdefault("created", manifest["updated"])
        manifest.setdefault("inputs", {})
        atomic_write_json(store.root / "manifest.json", manifest)
        return store

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def read_json(self, relative: str) -> Any:
        path = self.root / relative
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def write_json(self, relative: str, obj: Any) -> Path:
        path = self.root / relative
        atomic_write_json(path, obj)
        return path

    def write_text(self, relative: str, text: str) -> Path:
        path = self.root / relative
        atomic_write_text(path, text)
        return path

    def record_input(self, name: str, info: dict) -> None:
        """Note an input (data file, model, source) with its hash in the manifest."""
        manifest = self.read_json("manifest.json") or {}
        manifest.setdefault("inputs", {})[name] = info
        atomic_write_json(self.root / "manifest.json", manifest)

    def stage(self, name: str, key: Any) -> "Stage":
        return Stage(self, name, stable_hash(key))


class Stage:
    """A unit of work whose artifacts are reused when its inputs (``key``) are unchanged."""

    def __init__(self, store: RunStore, name: str, key_hash: str):
        self.store, self.name, self.key_hash = store, name, key_hash
        self.record_path = store.root / "stages" / f"{name}.json"

    @property
    def done(self) -> bool:
        if not self.record_path.exists():
            return False
        record = json.loads(self.record_path.read_text(encoding="utf-8"))
        return record.get("key") == self.key_hash and all(
            (self.store.root / a).exists() for a in record.get("artifacts", [])
        )

    def finish(self, artifacts: list[str], **info: Any) -> None:
        atomic_write_json(
            self.record_path, {"key": self.key_hash, "artifacts": artifacts, "finished": _now(), **info}
        )

    def invalidate(self) -> None:
        self.record_path.unlink(missing_ok=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
