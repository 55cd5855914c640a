"""What a preference method is: hyper-parameters, the log-probabilities it needs, and a pure loss.

A method never sees a model. The trainer (or the bandit's tabular policy) computes the
log-probabilities named in ``needs`` for a batch of preference pairs and hands them over as
``LogProbs``; the method returns per-pair losses and metrics. The same function therefore trains
a three-armed bandit and a LoRA on an 8B model.

Sequence keys. ``"chosen"`` is log pi(y_w | x) under the 0-revision prompt, ``"rejected"`` is
log pi(y_l | x). A revision key ``"chosen|rejected"`` is log pi(y_w | x, y_l): the revision prompt
with y_l as the in-context completion (the EXAMPLE SUMMARY) and y_w as the completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness import registry
from harness.errors import HarnessError
from harness.plugin import Plugin

CHOSEN = "chosen"
REJECTED = "rejected"


def revision(completion: str, in_context: str) -> str:
    """Key of log pi(completion | x, in_context) under the task's revision prompt."""
    return f"{completion}|{in_context}"


def parse_key(key: str) -> tuple[str, str | None]:
    """``"chosen|rejected"`` -> ("chosen", "rejected"); ``"chosen"`` -> ("chosen", None)."""
    completion, _, in_context = key.partition("|")
    return completion, (in_context or None)


@dataclass(frozen=True)
class LogProbs:
    """Log-probabilities of a batch of B pairs, one entry per sequence key."""

    sums: dict[str, torch.Tensor]  # key -> [B], sum of log pi over the completion's tokens
    counts: dict[str, torch.Tensor]  # key -> [B], number of completion tokens (1 for a bandit arm)

    def get(self, key: str, average: bool) -> torch.Tensor:
        """Sum log-likelihood, or the per-token average when ``average`` (Appendix D's variant)."""
        if average:
            return self.sums[key] / self.counts[key].clamp(min=1)
        return self.sums[key]


@dataclass
class Method(Plugin):
    """Base of every preference method. Subclasses are dataclasses: their fields are the
    hyper-parameters, their defaults the paper's, and their docstring's first line is what
    ``harness list`` shows."""

    needs: ClassVar[tuple[str, ...]]  # the sequence keys whose log-probs loss() reads
    uses_reference: ClassVar[bool] = True  # False: no reference model is ever evaluated

    def loss(
        self, policy: LogProbs, reference: LogProbs | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-pair losses [B] and per-pair metrics (each [B]) for logging."""
        raise NotImplementedError

    def ratio(self, policy: LogProbs, reference: LogProbs | None, key: str) -> torch.Tensor:
        """h(key) = log pi - log pi_ref, both as sums or both as per-token averages."""
        average = getattr(self, "average_log_prob", False)
        logp = policy.get(key, average)
        return logp - reference.get(key, average) if reference is not None else logp


SIDES = (CHOSEN, REJECTED)
KNOWN_KEYS = (*SIDES, *(revision(c, i) for i in SIDES for c in SIDES))


def check_method_class(cls, name: str) -> None:
    """What can be checked when a method registers: a Method dataclass with a loss and valid needs."""
    import dataclasses

    def broken(rule: str) -> HarnessError:
        return HarnessError(f"method {name!r} ({cls.__module__}.{cls.__qualname__}) breaks the method contract: {rule}")

    if not (isinstance(cls, type) and issubclass(cls, Method) and dataclasses.is_dataclass(cls)):
        raise broken("it must be a @dataclass subclass of harness.method.Method")
    if cls.loss is Method.loss:
        raise broken("it must define loss(policy, reference)")
    needs = getattr(cls, "needs", None)
    if not isinstance(needs, tuple) or not needs:
        raise broken(f"`needs` must be a non-empty tuple of sequence keys, got {needs!r}")
    for key in needs:
        if key not in KNOWN_KEYS:
            raise broken(f"`needs` names {key!r}, which is not a sequence key (keys: {', '.join(KNOWN_KEYS)})")


def check_method(method: Method, batch: int = 3) -> None:
    """Run ``method``'s loss on random log-probabilities of ``batch`` pairs and check what the
    trainer relies on: per-pair losses [B], finite and differentiable, per-pair metrics [B].
    The harness calls it before every run; a plugin author can call it in their own tests."""
    name = getattr(method, "registered_name", type(method).__name__)

    def broken(rule: str) -> HarnessError:
        return HarnessError(f"method {name!r} breaks the method contract: {rule}")

    generator = torch.Generator().manual_seed(0)

    def logprobs(grad: bool) -> LogProbs:
        sums = {k: (-5 * torch.rand(batch, generator=generator)).requires_grad_(grad) for k in method.needs}
        return LogProbs(sums, {k: torch.randint(1, 20, (batch,), generator=generator).float() for k in method.needs})

    policy = logprobs(True)
    try:
        out = method.loss(policy, logprobs(False) if method.uses_reference else None)
    except KeyError as exc:
        raise broken(f"loss() read the sequence key {exc} that `needs` does not list ({', '.join(method.needs)})") from None
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise broken("loss() must return (per-pair losses, {metric name: per-pair values})")
    losses, metrics = out
    if not isinstance(losses, torch.Tensor) or losses.shape != (batch,):
        shape = list(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise broken(f"loss() must return one loss per pair, shape [B] (here [{batch}]), got {shape}; do not reduce with .mean()")
    if not torch.isfinite(losses).all():
        raise broken("loss() returned a non-finite loss on ordinary log-probabilities")
    if not losses.requires_grad:
        raise broken("loss() is not differentiable in the policy's log-probabilities (detached or built from constants)")
    for metric, value in metrics.items():
        if not isinstance(value, torch.Tensor) or value.shape != (batch,):
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise broken(f"metric {metric!r} must hold one value per pair, shape [B] (here [{batch}]), got {shape}")


def build_method(name: str, overrides: dict | None = None) -> Method:
    """The registered method ``name`` with its defaults and ``overrides`` applied, checked."""
    from harness.config import build_options

    return build_options(registry.methods.get(name), overrides or {}, what=f"method {name!r}")


register = registry.methods.register
