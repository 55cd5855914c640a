"""Configuration: files, ``key=value`` overrides and checked construction of plugin dataclasses.

A run's config is one plain dict (YAML or JSON on disk, the same keys as the CLI flags). Plugins
declare their options as dataclass fields, so one function checks every option of every method,
task, judge and engine: unknown keys and wrong types fail with the known keys and the closest match.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise HarnessError(f"config file {str(path)!r} is not valid YAML/JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HarnessError(f"config file {str(path)!r} must hold a mapping of options, not {type(data).__name__}")
    return data


def parse_assignments(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["beta=0.1", "matrix=[[0.5, 1], [0, 0.5]]"]`` -> {"beta": 0.1, "matrix": [[...]]}."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise HarnessError(f"{flag} {key}: cannot parse value {raw!r}: {exc}") from exc
    return out


def build_dataclass(cls: type, options: dict[str, Any], what: str):
    """Instantiate dataclass ``cls`` from ``options``, checking names and coercing simple types."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in options.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise HarnessError(f"{what} has no option {key!r}{hint} (options: {', '.join(sorted(fields))})")
        kwargs[key] = _coerce(value, _field_type(cls, key), f"{what} option {key!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"{what}: {exc}") from exc


def _field_type(cls: type, name: str):
    return typing.get_type_hints(cls).get(name, Any)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except HarnessError as exc:
                errors.append(str(exc))
        raise HarnessError(errors[0] if errors else f"{where}: bad value {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise HarnessError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise HarnessError(f"{where} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise HarnessError(f"{where} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise HarnessError(f"{where} must be an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise HarnessError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise HarnessError(f"{where} must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise HarnessError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value  # containers and Any: the plugin's __post_init__ validates them


def stable_hash(obj: Any) -> str:
    """A short content hash of JSON-able data, stable across runs and machines."""
    import hashlib

    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
