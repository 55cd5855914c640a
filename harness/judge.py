"""What a judge is, and the pairwise protocol every judge shares.

A comparison is one source (article, post or user request), the task's instruction and two
candidates. A judge returns p(A is better) in [0, 1] with a rationale, or a failure it says out
loud. The protocol judges both orders by default and averages them, so an order-inconsistent pair
(A first wins, A second loses) is a tie; a single, seeded random order is an option. Prompts live
in ``judges/prompts/<family>.txt`` (``summary`` or ``chat``) and are this project's own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from harness import registry
from harness.plugin import Plugin

PROMPTS = Path(importlib.util.find_spec("harness.judges").submodule_search_locations[0]) / "prompts"


@dataclass(frozen=True)
class Comparison:
    family: str  # "summary" or "chat": picks the judge prompt
    instruction: str  # what the candidates were asked to do
    source: str  # the article, post or user request both candidates answer
    a: str  # shown first
    b: str  # shown second


@dataclass
class Verdict:
    preference: float | None  # p(A better than B); None: the judge failed, and ``error`` says why
    rationale: str = ""
    error: str = ""
    cached: bool = False


def prompt_template(family: str) -> str:
    path = PROMPTS / f"{family}.txt"
    if not path.exists():
        raise ValueError(f"no judge prompt for family {family!r} (have: {', '.join(p.stem for p in PROMPTS.glob('*.txt'))})")
    return _read(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=32)
def _read(path: str, mtime_ns: int) -> str:  # re-read when the file changes
    return Path(path).read_text(encoding="utf-8")


def render_prompt(c: Comparison) -> str:
    return string.Template(prompt_template(c.family)).substitute(instruction=c.instruction, source=c.source, a=c.a, b=c.b)


@dataclass
class Judge(Plugin):
    """Base of the judges: ``judge`` answers a batch of comparisons in the order given."""

    name_for_humans: ClassVar[str] = ""
    # Options that change how verdicts are computed or fetched (batch sizes, retries, where the
    # cache lives), never what a verdict says: they alone are left out of the judge's identity.
    not_in_verdicts: ClassVar[frozenset[str]] = frozenset()
    stats: dict = field(default_factory=dict, init=False, repr=False)  # calls, failures, tokens, cost

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        raise NotImplementedError

    def describe_config(self) -> dict:
        """What identifies this judge's verdicts (shown on the leaderboard, keys its cache and the
        run's judgments): its name and every option but ``not_in_verdicts``, so that an option a
        judge gains is part of the key unless it is declared not to change verdicts. A judge adds
        what its options resolve to (the served model, the precision on this machine)."""
        return {"judge": self.registered_name, **self.options_but(self.not_in_verdicts)}

    @property
    def chunk_size(self) -> int:
        """Pairs per call of the judging stage: each chunk's verdicts are saved as it ends."""
        return 32

    def is_proxy(self) -> bool:
        """True for weak offline judges whose numbers must be labelled as a proxy."""
        return False

    def check_access(self) -> None:
        """Raise ``HarnessError`` if what this judge needs from outside the process is missing (an
        API key, an optional package, a hub model): called before a run's work, so that hours of
        training do not end at the judge."""


@dataclass
class PairVerdict:
    preference: float | None  # p(candidate better than opponent), both orders averaged; None: failed
    orders: list[Verdict]  # the raw verdict p(A better) in each order judged
    candidate_first: list[bool]  # per order: was the candidate shown as A
    error: str = ""


def judge_pairs(
    judge: Judge, items: list[tuple[str, str, str, str, str]], both_orders: bool = True, seed: int = 0, keys: list[str] | None = None,
) -> list[PairVerdict]:
    """Judge (family, instruction, source, candidate, opponent) items with the position protocol.

    Both orders: p = (p1 + (1 - p2)) / 2 where p1 judges candidate-first and p2 opponent-first.
    One order: a seeded coin per item decides which side is shown first; the coin reads the
    item's identity (``keys``: example, method, opponent, revision; by default its texts), never
    its position, so a resumed or re-chunked run shows every pair as an uninterrupted one did.
    Two identical texts are a tie without asking (as AlpacaEval does): a judge could only show
    its position bias on them."""
    comparisons, plan = [], []
    for i, (family, instruction, source, cand, opp) in enumerate(items):
        if cand.strip() == opp.strip():
            orders = []
        elif both_orders:
            orders = [False, True]
        else:
            identity = keys[i] if keys is not None else f"{source}/{cand}/{opp}"
            coin = int(hashlib.sha256(f"{seed}/{identity}".encode()).hexdigest()[:8], 16) % 2
            orders = [bool(coin)]
        plan.append((len(comparisons), orders))
        for swapped in orders:
            a, b = (opp, cand) if swapped else (cand, opp)
            comparisons.append(Comparison(family, instruction, source, a, b))
    verdicts = judge.judge(comparisons)
    out = []
    for start, orders in plan:
        if not orders:
            out.append(PairVerdict(0.5, [], []))  # no order judged: the diagnostics see no position
            continue
        vs = verdicts[start : start + len(orders)]
        shown_first = [not swapped for swapped in orders]
        failed = [v for v in vs if v.preference is None]
        if failed:
            out.append(PairVerdict(None, vs, shown_first, failed[0].error))
            continue
        prefs = [1.0 - v.preference if swapped else v.preference for v, swapped in zip(vs, orders)]
        out.append(PairVerdict(sum(prefs) / len(prefs), vs, shown_first))
    return out


def build_judge(name: str, options: dict | None = None) -> Judge:
    """The text judge ``name`` with ``options``, checked (the oracle of synthetic tasks is refused)."""
    from harness.config import build_options
    from harness.errors import HarnessError

    cls = registry.judges.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Judge)):
        text_judges = [n for n, c in registry.judges.items() if isinstance(c, type) and issubclass(c, Judge)]
        raise HarnessError(f"judge {name!r} does not judge text; text tasks take: {', '.join(text_judges)}")
    return build_options(cls, options or {}, what=f"judge {name!r}")


register = registry.judges.register
