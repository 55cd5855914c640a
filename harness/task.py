"""What a task is. Two kinds share the registry:

- ``synthetic``: tabular problems with a known preference matrix (the paper's Sec. 5 bandit). The
  harness trains a tabular policy with the same method losses and an oracle scores it exactly.
- ``text``: language tasks with splits (``sft``, ``preference``, ``test``), a 0-revision and an
  N-revision prompt template, references, and the judge prompt family that fits them.

A text task declares its splits as ``Split``: the canonical fields, a documented hub source and
offline sources. ``TextTask.load`` picks the source (a user's file, then the hub, then offline,
unless ``source`` says otherwise) and returns validated rows with their provenance.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from harness import registry
from harness.config import NonNegativeInt
from harness.datasources import (
    Field,
    HubSource,
    Loaded,
    NoSourceError,
    hub_reachable,
    keep_valid,
    load_hub,
    read_local,
    unique_ids,
)
from harness.errors import HarnessError
from harness.plugin import Plugin
from harness.truncation import SourceBudget

SOURCES = ("auto", "local", "hub", "offline")


@dataclass
class Task(Plugin):
    kind: ClassVar[str]  # "synthetic" or "text"
    # Method options this task's protocol sets unless the user does (e.g. the bandit's beta = 1).
    method_defaults: ClassVar[dict[str, object]] = {}


@dataclass(frozen=True)
class Offline:
    """A file that ships with a package or lies in the workplace's data folder."""

    label: str  # what the screen and manifest call it
    locate: Callable[[], Path | None]  # returns the file, or None where it is absent
    convert: Callable[[dict], dict | None] | None = None


@dataclass(frozen=True)
class Split:
    fields: tuple[Field, ...]  # canonical fields every row must have
    hub: HubSource | None = None
    offline: tuple[Offline, ...] = ()
    local_convert: Callable[[dict], dict | None] | None = None  # reads a dataset's own format from a local file; None leaves a record out


@dataclass
class TextTask(Task):
    data_files: dict = field(default_factory=dict)  # split -> local JSONL/Parquet/CSV file (tried first)
    field_map: dict = field(default_factory=dict)  # canonical field -> column of data_files; or split -> {...}
    source: str = "auto"  # auto (local, hub, offline in that order), local, hub or offline
    max_source_tokens: NonNegativeInt = 1024  # the source document is cut to this many tokens (harness/truncation.py); 0: never cut

    kind = "text"
    # 1: a prompt reaches the model with its tokenizer's special tokens once (harness.prompting.leading_tokens):
    # a raw prompt gains Llama's BOS in training and generation; a chat prompt templated for a server's
    # completions API no longer carries a second one. Training scores each sequence as the tokens of one
    # text, the tokens generation reads (harness.policies.lm.PairEncoder), not parts tokenized apart; a chat
    # template that prints today's date prints harness.prompting.CHAT_DATE
    code_version: ClassVar[int] = 1
    family: ClassVar[str]  # judge prompt family: "summary" or "chat"
    chat: ClassVar[bool] = False  # True: prompts are a user turn, wrapped by the model's chat template
    source_field: ClassVar[str]  # the one field the token budget may cut
    template: ClassVar[str]  # 0-revision prompt (string.Template, ${field})
    revision_template: ClassVar[str]  # N-revision prompt; ${previous} is revision N-1
    reference_label: ClassVar[str]  # what the references are, for the screen
    stop: ClassVar[tuple[str, ...]] = ()  # generation stops at the first of these (after leading whitespace)
    instruction: ClassVar[str]  # what the candidates are asked to do, as the judge is told
    paper_items: ClassVar[int] = 1024  # the paper's protocol evaluates the first this many test items (Sec. 6); its mean and std resample them

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        unknown = set(self.data_files) - set(self.splits())
        if unknown:
            raise ValueError(f"data_files names unknown split(s) {sorted(unknown)} (splits: {', '.join(self.splits())})")

    # -- data ------------------------------------------------------------------------------------
    def splits(self) -> dict[str, Split]:
        raise NotImplementedError

    def load(self, split: str, limit: int | None = None) -> Loaded:
        spec, kind, where, notes = self._source(split)
        if kind == "local":
            loaded = read_local(where, list(spec.fields), self._field_map(split), limit, spec.local_convert)
        elif kind == "hub":
            loaded = load_hub(where, list(spec.fields), limit)
        else:
            offline, path = where
            rows = read_local(path, [], None, None).rows  # validated below, after conversion
            rows = keep_valid((offline.convert(r) if offline.convert else r for r in rows), spec.fields, str(path), notes)
            loaded = Loaded(rows, "offline", f"{offline.label} ({path})", notes)
        return self._finish(loaded, limit, split)

    def check_source(self, split: str) -> str:
        """Where ``load`` will read ``split`` from, or what it would raise for want of a source,
        without reading the split: a given file must exist and its first row hold the split's
        fields; a hub dataset is only checked for a hub that answers (its download waits for the
        run), an offline file for being there; then the references, for a task that keeps them apart."""
        spec, kind, where, _ = self._source(split)
        if kind == "local":
            read_local(where, list(spec.fields), self._field_map(split), 1, spec.local_convert)
            found = f"local file {where}"
        elif kind == "hub":
            found = f"hub {where.describe()}"
        else:
            found = f"offline {where[0].label} ({where[1]})"
        if split == "test":
            self.check_references()
        return found

    def _source(self, split: str) -> tuple[Split, str, object, list[str]]:
        """The split's spec and the first of its sources that answers, in the order ``source``
        allows: ("local", its path), ("hub", the HubSource) or ("offline", (the Offline, its
        path)), with notes on the sources passed over."""
        spec = self.splits().get(split)
        if spec is None:
            raise NoSourceError(f"task {self.registered_name!r} has no {split!r} split (it has {', '.join(self.splits())})")
        notes: list[str] = []
        if split in self.data_files and self.source in ("auto", "local"):
            return spec, "local", self.data_files[split], notes
        if self.source == "local":
            raise HarnessError(f"source is 'local' but no file is given for split {split!r}: pass --task-arg data_files.{split}=PATH")
        if spec.hub is not None and self.source in ("auto", "hub"):
            reachable, why = hub_reachable()
            if reachable:
                return spec, "hub", spec.hub, notes
            if self.source == "hub":
                raise HarnessError(f"source is 'hub' but the hub is unreachable ({why}) for {spec.hub.describe()}")
            notes.append(f"hub skipped: {why}")
        if self.source in ("auto", "offline"):
            for offline in spec.offline:
                path = offline.locate()
                if path is not None:
                    return spec, "offline", (offline, path), notes
                notes.append(f"{offline.label}: not present")
        hub = f" or the hub ({spec.hub.describe()})" if spec.hub else ""
        raise NoSourceError(
            f"no source for split {split!r} of task {self.registered_name!r}: give a local file (the task option "
            f"data_files.{split}=PATH: --task-arg, or --train-task-arg for a training task){hub}; tried: {'; '.join(notes) or 'nothing'}"
        )

    def names_no_source(self, split: str) -> bool:
        """Whether ``split`` comes from nowhere whatever the hub's state: the task has no such split,
        or no file given and neither a hub dataset nor an offline file for it (``load`` raises
        ``NoSourceError``)."""
        spec = self.splits().get(split)
        return spec is None or (split not in self.data_files and spec.hub is None and not spec.offline)

    def _field_map(self, split: str) -> dict:
        """Flat entries apply to every split; ``{split: {...}}`` or ``split.field`` to one."""
        splits = self.splits()
        out = {}
        for key, value in self.field_map.items():
            head, dot, rest = key.partition(".")
            if isinstance(value, dict) and key in splits:
                if key == split:
                    out.update(value)
            elif dot and head in splits:
                if head == split:
                    out[rest] = value
            else:
                out[key] = value
        return out

    def _finish(self, loaded: Loaded, limit: int | None, split: str) -> Loaded:
        if split == "test":  # a test id names one example: its verdicts and references are joined by it
            loaded.rows = unique_ids(loaded)
        if limit is not None:
            loaded.rows = loaded.rows[:limit]
        return self.attach_references(loaded)

    def attach_references(self, loaded: Loaded) -> Loaded:
        """Tasks whose references live apart from their prompts (Arena-Hard) join them here."""
        return loaded

    def check_references(self) -> None:
        """Raise what ``attach_references`` would for want of its file; nothing for references in the rows."""

    # -- prompts ---------------------------------------------------------------------------------
    def prompt(self, example: dict, budget: SourceBudget | None = None) -> str:
        """The 0-revision prompt of ``example`` (appendix C for TL;DR and XSum)."""
        return self._fill(self.template, example, budget)

    def revision_prompt(self, example: dict, previous: str, budget: SourceBudget | None = None) -> str:
        """The N-revision prompt: ``previous`` (revision N-1) is the in-context completion."""
        return self._fill(self.revision_template, {**example, "previous": previous.strip()}, budget)

    def _fill(self, template: str, example: dict, budget: SourceBudget | None) -> str:
        values = {k: str(v) for k, v in example.items() if isinstance(v, (str, int))}
        if budget is not None:
            values[self.source_field] = budget.cut(values[self.source_field])
        try:
            return string.Template(template).substitute(values)
        except KeyError as exc:
            raise HarnessError(f"task {self.registered_name!r}: example {example.get('id')!r} lacks field {exc} of its template") from None

    def judge_source(self, example: dict) -> str:
        """What the judge reads as the source both candidates answer."""
        return str(example[self.source_field])

    # -- listing ---------------------------------------------------------------------------------
    @classmethod
    def listing(cls) -> str:
        task = cls()
        lines = [f"family: {cls.family}; reference: {task.reference_label}"]
        for name, spec in task.splits().items():
            sources = ["local file"]
            if spec.hub:
                sources.append(f"hub {spec.hub.describe()}")
            sources += [f"offline {o.label}" for o in spec.offline]
            lines.append(f"{name}: {' > '.join(sources)}")
        return "\n".join(lines)


def build_task(name: str, options: dict | None = None) -> Task:
    from harness.config import build_options

    return build_options(registry.tasks.get(name), options or {}, what=f"task {name!r}")


register = registry.tasks.register
