"""The run store: one folder per run holding its config, manifest, artifacts and summary.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash leaves either the old file or the new one, never half of one; logs that grow row by row
(generations, verdicts, training metrics) are ``JsonlLog``s, whose appends are fsynced and whose
torn last line, if a kill left one, is cut off before the next append. A stage records the hash of
its inputs in ``stages/<name>.json`` only after its artifacts are written: rerunning the same
config finds the record and skips the stage; a changed input gives a new hash and redoes it.

One process writes a run folder at a time: ``RunStore.open`` holds an exclusive lock on it.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import shutil
import sys
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.config import stable_hash
from harness.errors import HarnessError

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
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _name_the_file(exc, path)
        raise


def _name_the_file(exc: BaseException, path: Path) -> None:
    """A failed write (a full disk) names no file; raise it naming ``path``, which the user will look for."""
    if isinstance(exc, OSError) and exc.filename is None:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with NaN refused (``NaN`` is not JSON: a diverged number must fail where it arises)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def dumps_row(row: dict) -> str:
    """One JSONL line. Only "\n" ends a line: U+2028 and friends inside a text stay in their row."""
    return json.dumps(row, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


class JsonlLog:
    """An append-only JSONL file. Each ``append`` is one write, flushed and fsynced; a kill can
    only tear the last line, which ``read`` ignores and the first ``append`` cuts off."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._repaired = False

    def read(self) -> list[dict]:
        data = self.path.read_bytes() if self.path.exists() else b""
        rows = []
        for number, line in enumerate(data.split(b"\n")[:-1], start=1):  # the piece after the last "\n" is torn or empty
            try:
                rows.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise HarnessError(f"{self.path}, line {number}: not a JSON row ({exc}); the harness never writes such a line: "
                                   "was the file edited? Remove the line or the file to redo its rows") from None  # fmt: skip
        return rows

    def _repair(self) -> None:
        """Cut a torn last line (everything after the last "\n") off the file."""
        if self._repaired or not self.path.exists():
            return
        with self.path.open("r+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:
                step = min(pos, 4096)
                fh.seek(pos - step)
                newline = fh.read(step).rfind(b"\n")
                if newline >= 0:
                    pos = pos - step + newline + 1
                    break
                pos -= step
            if pos < end:
                fh.truncate(pos)
        self._repaired = True

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        text = "".join(dumps_row(r) for r in rows).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        try:
            with self.path.open("ab") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # a torn last line is cut by the next append (_repair)
            _name_the_file(exc, self.path)
            raise

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the whole log atomically (e.g. drop rows past a resumed checkpoint)."""
        atomic_write_text(self.path, "".join(dumps_row(r) for r in rows))
        self._repaired = True


def read_jsonl(path: Path) -> list[dict]:
    return JsonlLog(path).read()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def compute_device() -> str:
    """What this process computes on, as a manifest records it beside the versions: the GPUs
    (how many of each) and the CUDA build, or the CPU's threads."""
    import torch

    if not torch.cuda.is_available():
        return f"CPU, {torch.get_num_threads()} threads"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names)) + f" (CUDA {torch.version.cuda})"


MARKERS = ("manifest.json", "config.json")  # what makes a folder a run folder


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = None

    @classmethod
    def open(cls, root: Path, config: dict, seed: int, writer: bool = True) -> "RunStore":
        """Create (or reopen) the run folder, lock it and snapshot the config and the environment.
        ``writer=False`` (a non-main process of a distributed run) only opens it."""
        store = cls(root)
        if not writer:
            return store
        root = store.root
        if root.exists() and not root.is_dir():
            raise HarnessError(f"output dir {str(root)!r} exists and is not a folder: choose another --output-dir")
        if root.is_dir() and any(root.iterdir()) and not any((root / m).exists() for m in MARKERS):
            raise HarnessError(f"output dir {str(root)!r} holds files but no run (no manifest.json): the harness will not write "
                               "into it; choose an empty or new --output-dir")  # fmt: skip
        try:
            root.mkdir(parents=True, exist_ok=True)
            store.lock()
            atomic_write_json(root / "config.json", config)
        except OSError as exc:
            raise HarnessError(f"cannot write the run folder {str(root)!r}: {exc.strerror or exc}; choose another --output-dir") from None
        manifest = store.read_json("manifest.json") or {}
        manifest.update(
            {
                "config_hash": stable_hash(config),
                "seed": seed,
                "versions": package_versions(),
                "platform": platform.platform(),
                "device": compute_device(),
                "command": sys.argv,
                "updated": _now(),
            }
        )
        manifest.setdefault("created", manifest["updated"])
        manifest.setdefault("inputs", {})
        atomic_write_json(store.root / "manifest.json", manifest)
        return store

    def lock(self) -> None:
        """Hold the folder's lock until this process ends: a second writer fails at once."""
        if self._lock is not None:
            return
        fh = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise HarnessError(f"run folder {str(self.root)!r} is in use by {holder}: wait for it to finish, or use another --output-dir") from None
        fh.truncate(0)
        fh.write(f"pid {os.getpid()} ({' '.join(sys.argv[:3])})")
        fh.flush()
        self._lock = fh

    @contextmanager
    def lock_if_idle(self):
        """Yields whether this folder's lock was free and is now held, until the block ends: a run
        writing it holds the lock, and may be rewriting any of its files."""
        try:
            fd = os.open(self.root / ".lock", os.O_RDONLY)
        except FileNotFoundError:  # never opened by a run (RunStore.open creates it)
            yield True
            return
        except OSError:
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def neighbours(self) -> list[RunStore]:
        """The other run folders in this one's parent folder (``runs/``), most recently updated
        first: where a stage of the same inputs may have finished already."""
        try:
            entries = list(self.root.parent.iterdir())
        except OSError:
            return []
        here = self.root.resolve()
        folders = [p for p in entries if _own_run_folder(p) and p.resolve() != here]
        return [RunStore(p) for p in sorted(folders, key=_updated, reverse=True)]

    def neighbour_rows(self, relative: str, worth_reading: Callable[[RunStore], bool]) -> Iterator[tuple[Path, list[dict]]]:
        """(folder, rows) of the log ``relative`` in each neighbour that ``worth_reading`` picks (a
        log of thousands of rows is read only where it can hold what is looked for). A log or
        manifest edited by hand there is that run's to mend, and is passed over."""
        for other in self.neighbours():
            try:
                if worth_reading(other):
                    yield other.root, other.log(relative).read()
            except (HarnessError, AttributeError):
                continue

    def log(self, relative: str) -> JsonlLog:
        return JsonlLog(self.root / relative)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def read_json(self, relative: str) -> Any:
        path = self.root / relative
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HarnessError(f"{path} is not valid JSON ({exc}); the harness writes it atomically: was it edited or copied half?") from None

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
        return self.record() is not None

    def record(self) -> dict | None:
        """The record of this stage done with this key, its artifacts present; None otherwise,
        and for a record that is not one (edited by hand): the stage is then done again."""
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != self.key_hash:
            return None
        return record if all((self.store.root / a).exists() for a in record.get("artifacts", [])) else None

    def begin(self) -> None:
        """Called before the work rewrites the artifacts: a record of other inputs would otherwise
        vouch for artifacts half rewritten by a run killed midway, and a rerun of those inputs
        would take them as its own."""
        self.record_path.unlink(missing_ok=True)

    def finish(self, artifacts: list[str], **info: Any) -> None:
        atomic_write_json(
            self.record_path, {"key": self.key_hash, "artifacts": artifacts, "finished": _now(), **info}
        )

    def copy_from_neighbour(self, paths: list[str]) -> "Stage | None":
        """The stage that finished with the same key in a run folder beside this one (adding a
        method to a comparison makes a new folder, whose other methods' inputs are unchanged):
        ``paths`` (its files and folders, checkpoints left out) are copied from there with their
        times, so that keys naming them by their files hold, and the stage is recorded done here.
        None where no folder has it. A folder that a run is writing now is passed over: it may be
        rewriting them. A stage of a group (``train/NAME``) is found under another name of that
        group too, its paths renamed: one method with the same options is ``srpo`` in one run and
        ``srpo[alpha=0]`` in a sweep of alpha."""
        for other in self.store.neighbours():
            for there in self._namesakes(other):
                with other.lock_if_idle() as idle:
                    record = there.record() if idle else None  # again: the run may have redone it before letting go
                    if record is None:
                        continue
                    self.begin()
                    for relative in paths:
                        _copy_replacing(other.root / _renamed(relative, self.name, there.name), self.store.root / relative)
                self.finish([_renamed(a, there.name, self.name) for a in record["artifacts"]], copied_from=str(other.root),
                            **({"copied_as": there.name} if there.name != self.name else {}))  # fmt: skip
                return there
        return None

    def _namesakes(self, other: RunStore) -> Iterator["Stage"]:
        """The stages of ``other`` done with this key: under this name first, then under the other
        names of its group (their records are a few lines each)."""
        same = Stage(other, self.name, self.key_hash)
        if same.record() is not None:
            yield same
        group, _, _ = self.name.rpartition("/")
        if not group:
            return
        for path in sorted((other.root / "stages" / group).glob("*.json")):
            there = Stage(other, f"{group}/{path.stem}", self.key_hash)
            if there.name != self.name and there.record() is not None:
                yield there


def _renamed(relative: str, old: str, new: str) -> str:
    """``relative`` with the stage name ``old`` that opens it replaced by ``new``."""
    return new + relative[len(old):] if relative == old or relative.startswith(old + "/") else relative


def _own_run_folder(folder: Path) -> bool:
    """A run folder that this user owns. A shared parent (``--output-dir /tmp/run``) holds other
    users' folders too, whose weights and records this run must not take for its own; one that
    cannot be read is passed over, not the end of the search."""
    try:
        mine = os.name != "posix" or folder.stat().st_uid == os.getuid()
        return mine and folder.is_dir() and any((folder / m).exists() for m in MARKERS)
    except OSError:
        return False


def _updated(folder: Path) -> float:
    """When a run last wrote ``folder``'s manifest (0: never, or the folder went away meanwhile)."""
    try:
        return (folder / "manifest.json").stat().st_mtime
    except OSError:
        return 0.0


def _copy_replacing(source: Path, target: Path) -> None:
    """``source`` (a file or a folder) copied over ``target`` with its files' times, whole or not at
    all: into a temporary name beside it, then renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoint", "checkpoint.*", "*.partial"), copy_function=_link_or_copy)
        shutil.rmtree(target, ignore_errors=True)
    else:
        _link_or_copy(source, tmp)
    os.replace(tmp, target)


def _link_or_copy(source: Path | str, target: Path | str) -> None:
    """A hard link where the file system allows one: the paper preset's SFT model (13 GB for
    LLaMA-7B) is not written again for every run folder beside it. It is safe because the harness
    never writes into a finished file: weights, logs and records are written beside and renamed
    over (a training redone here unlinks its old files first), so one folder's rewrite leaves the
    other's file as it was. A copy with its times where no link can be made (another file system)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
