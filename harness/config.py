"""Configuration: files, ``KEY=VALUE`` overrides, deep merges and checked construction of options.

A run's config is one mapping (YAML or JSON on disk, flags on the command line) validated by the
schema in ``harness/runconfig.py``. Plugins (methods, tasks, judges, engines) and the option groups
(trainer, sampling, bootstrap) declare their options as dataclass fields; pydantic checks and
coerces every one of them, so a wrong name or type fails with the known options and the closest
match before anything is loaded or written.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from harness.errors import HarnessError

# Bounded option types: a plugin's field annotated with one is checked (and its error worded) by pydantic.
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Options:
    """Base of every options dataclass: pydantic validates it (lax coercion of flag strings,
    unknown keys refused, NaN and infinity refused) when it is built through ``build_options``."""

    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True)


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except UnicodeDecodeError as exc:
        raise HarnessError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise HarnessError(f"config file {str(path)!r} is not valid YAML/JSON: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HarnessError(f"config file {str(path)!r} must hold a mapping of options, not {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(exc, 'problem', None) or str(exc).splitlines()[0]}{where}"


def parse_assignments(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["beta=0.1", "dpo.lr=1e-6"]`` -> {"beta": 0.1, "dpo": {"lr": 1e-6}}: VALUE is YAML, and a
    dotted KEY nests at its first dot (see ``nest_dotted``)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(".") or key.endswith("."):
            raise HarnessError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise HarnessError(f"{flag} {key}: cannot parse value {raw!r}: {_yaml_problem(exc)}") from None
        out = deep_merge(out, nest_dotted({key: value}, flag))
    return out


def nest_dotted(options: dict, where: str) -> dict:
    """``{"dpo.lr": 1e-6, "adapter_models.runs/x.y/adapter": "a"}`` -> ``{"dpo": {"lr": 1e-6},
    "adapter_models": {"runs/x.y/adapter": "a"}}``: a key nests at its first dot only, so a path
    or a split-qualified name after it stays whole. Flags and config files read alike."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        head, dot, rest = str(key).partition(".")
        item = {rest: value} if dot else value
        if dot and head in out and not isinstance(out[head], dict):
            raise HarnessError(f"{where} sets {head!r} both as a whole and as {key!r}")
        out[head] = deep_merge(out[head], item) if isinstance(out.get(head), dict) and isinstance(item, dict) else item
    return out


def dotted(mapping: dict, prefix: str = "") -> dict:
    """``{"train": {"dpo": {"lr": 1e-6}}}`` -> ``{"train.dpo.lr": 1e-6}`` (under ``prefix.`` when
    given): one key per leaf, as presets and settings are shown; an empty mapping has no leaf."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(dotted(value, name) if isinstance(value, dict) else {name: value})
    return out


def deep_merge(*layers: dict | None) -> dict:
    """Later layers win; mappings merge key by key at every depth; ``None`` values are unset."""
    out: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = value
    return out


def build_options(cls: type, options: dict[str, Any], what: str):
    """``cls`` (an options dataclass) built from ``options`` by pydantic; a user's mistake becomes
    one HarnessError that names ``what``, the option and the rule it broke."""
    if not isinstance(options, dict):
        raise HarnessError(f"{what}: options must be a mapping of KEY: VALUE, got {type(options).__name__} {options!r}")
    try:
        return TypeAdapter(cls).validate_python(nest_dotted(options, what))
    except ValidationError as exc:
        raise HarnessError(describe_validation_error(exc, what, _option_names(cls))) from None
    except (TypeError, ValueError) as exc:  # a __post_init__ check outside pydantic's own
        raise HarnessError(f"{what}: {exc}") from None


def _option_names(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return sorted(f.name for f in dataclasses.fields(cls) if f.init)
    return sorted(getattr(cls, "model_fields", {}))


def describe_validation_error(exc: ValidationError, what: str, known: list[str], flags: dict[str, str] | None = None) -> str:
    """The first error of ``exc`` as one line: where, what is wrong, what was given. A union's
    members each fail on their own (``PositiveInt | Literal["auto"]``): their messages join."""
    errors = exc.errors(include_url=False)
    error = errors[0]
    loc = _location(error)
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        name = str(error["loc"][-1])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{what} has no option {name!r}{hint} (options: {', '.join(known)})"
    members = [e["msg"] for e in errors if _location(e) == loc]
    message = " or ".join([members[0], *(m.removeprefix("Input should be ") for m in members[1:])])
    if error["type"] == "value_error":  # raised by a check of ours: its text is the message
        message = message.removeprefix("Value error, ")
    where = f"{what} option {loc!r}" if loc else what
    if flags and loc.split(".")[0] in flags:
        where += f" ({flags[loc.split('.')[0]]})"
    given = error.get("input")
    shown = "" if error["type"] == "value_error" or isinstance(given, dict) else f" (got {_short(given)})"
    return f"{where}: {message[0].lower() + message[1:]}{shown}"


_UNION_TAG = re.compile(r"bool|int|float|str|none|constrained-\w+|[\w-]+\[.*\]")  # pydantic names a union's member in an error's location


def _location(error: dict) -> str:
    return ".".join(str(p) for p in error["loc"] if not _UNION_TAG.fullmatch(str(p)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def code_version_key(obj: Any) -> dict:
    """What a key holds of a plugin's ``code_version`` (``harness.plugin``): nothing at 0."""
    version = getattr(type(obj), "code_version", 0)
    return {"__code_version__": version} if version else {}


def jsonable(obj: Any) -> Any:
    """Plain JSON data for a key or a record: a dataclass becomes its fields plus its class (two
    plugins with the same fields are not the same inputs) and its code version, a Path its text,
    an object with a ``__key__`` method (many rows) what that method returns (their digest)."""
    if hasattr(obj, "__key__") and not isinstance(obj, type):
        return obj.__key__()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return {"__class__": f"{type(obj).__module__}.{type(obj).__qualname__}", **code_version_key(obj), **fields}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stable_hash(obj: Any) -> str:
    """A short content hash of JSON-able data (dataclasses included), stable across runs and machines."""
    blob = json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
