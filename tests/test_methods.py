"""Every loss against values worked out independently here, plus gradient checks."""

import math
import re

import pytest
import torch

from harness import registry
from harness.config import build_options
from harness.errors import HarnessError
from harness.method import LogProbs, build_method

KEYS6 = ("chosen", "rejected", "chosen|rejected", "rejected|rejected", "chosen|chosen", "rejected|chosen")


def _logprobs(values: dict, counts: dict | None = None, dtype=torch.float64) -> LogProbs:
    sums = {k: torch.tensor(v, dtype=dtype) for k, v in values.items()}
    cnts = {k: torch.tensor((counts or {}).get(k, [1.0] * len(v)), dtype=dtype) for k, v in values.items()}
    return LogProbs(sums, cnts)


POLICY = {"chosen": [-3.0, -10.0], "rejected": [-4.0, -6.0], "chosen|rejected": [-2.5, -9.0],
          "rejected|rejected": [-3.5, -5.0], "chosen|chosen": [-2.0, -8.0], "rejected|chosen": [-5.0, -7.5]}  # fmt: skip
REFERENCE = {"chosen": [-3.5, -9.0], "rejected": [-3.8, -6.5], "chosen|rejected": [-3.0, -9.5],
             "rejected|rejected": [-3.0, -5.5], "chosen|chosen": [-2.2, -8.5], "rejected|chosen": [-4.0, -7.0]}  # fmt: skip
COUNTS = {"chosen": [4, 10], "rejected": [5, 3], "chosen|rejected": [4, 10], "rejected|rejected": [5, 3],
          "chosen|chosen": [4, 10], "rejected|chosen": [5, 3]}  # fmt: skip


def _h(key, i, average=False):
    p, r = POLICY[key][i], REFERENCE[key][i]
    if average:
        p, r = p / COUNTS[key][i], r / COUNTS[key][i]
    return p - r


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("average", [False, True])
def test_srpo_matches_eq_15_16_17(alpha, average):
    beta = 0.7
    method = build_method("srpo", {"beta": beta, "alpha": alpha, "average_log_prob": average})
    losses, metrics = method.loss(_logprobs(POLICY, COUNTS), _logprobs(REFERENCE, COUNTS))
    for i in range(2):
        h = lambda k: _h(k, i, average)  # noqa: E731
        eq15 = (0.5 - beta * (h("chosen|rejected") - h("rejected|rejected"))) ** 2 + (
            0.5 - beta * (h("chosen|chosen") - h("rejected|chosen"))
        ) ** 2
        eq16 = (beta * (h("chosen|rejected") + h("chosen") - h("rejected|chosen") - h("rejected")) - 1) ** 2
        expected = (1 - alpha) * eq16 + alpha * eq15
        assert losses[i].item() == pytest.approx(expected, rel=1e-12)
        assert metrics["loss_joint"][i].item() == pytest.approx(eq16, rel=1e-12)
        assert metrics["loss_self_improve"][i].item() == pytest.approx(eq15, rel=1e-12)


def test_srpo_alpha_one_ignores_zero_revision_terms():
    """Appendix B: alpha = 1 is Eq. 15 alone, so h(y_w) and h(y_l) do not matter."""
    method = build_method("srpo", {"beta": 0.5, "alpha": 1.0})
    changed = dict(POLICY, chosen=[5.0, 5.0], rejected=[-50.0, -50.0])
    a, _ = method.loss(_logprobs(POLICY), _logprobs(REFERENCE))
    b, _ = method.loss(_logprobs(changed), _logprobs(REFERENCE))
    assert torch.allclose(a, b)


def test_srpo_joint_loss_raises_chosen_log_ratio():
    """The erratum: Eq. 16 (not Eq. 4/14 as printed) lowers the loss when h(y_w) grows."""
    method = build_method("srpo", {"beta": 0.1, "alpha": 0.0})
    pol = _logprobs(POLICY)
    pol.sums["chosen"].requires_grad_(True)
    losses, _ = method.loss(pol, _logprobs(REFERENCE))
    losses.sum().backward()
    # margin*beta < 1 here, so increasing h(y_w) must decrease the loss
    assert (pol.sums["chosen"].grad < 0).all()


@pytest.mark.parametrize("average", [False, True])
def test_dpo(average):
    beta = 0.3
    losses, metrics = build_method("dpo", {"beta": beta, "average_log_prob": average}).loss(
        _logprobs(POLICY, COUNTS), _logprobs(REFERENCE, COUNTS)
    )
    for i in range(2):
        margin = _h("chosen", i, average) - _h("rejected", i, average)
        assert losses[i].item() == pytest.approx(-math.log(_sigmoid(beta * margin)), rel=1e-12)
        assert metrics["accuracy"][i].item() == float(margin > 0)


@pytest.mark.parametrize("average", [False, True])
def test_ipo(average):
    beta = 0.25
    losses, _ = build_method("ipo", {"beta": beta, "average_log_prob": average}).loss(
        _logprobs(POLICY, COUNTS), _logprobs(REFERENCE, COUNTS)
    )
    for i in range(2):
        margin = _h("chosen", i, average) - _h("rejected", i, average)
        assert losses[i].item() == pytest.approx((margin - 1 / (2 * beta)) ** 2, rel=1e-12)


@pytest.mark.parametrize("average", [False, True])
def test_simpo_is_reference_free(average):
    beta, gamma = 2.0, 0.4
    method = build_method("simpo", {"beta": beta, "gamma": gamma, "average_log_prob": average})
    assert method.uses_reference is False
    losses, _ = method.loss(_logprobs(POLICY, COUNTS), None)
    for i in range(2):
        w, l = POLICY["chosen"][i], POLICY["rejected"][i]
        if average:
            w, l = w / COUNTS["chosen"][i], l / COUNTS["rejected"][i]
        assert losses[i].item() == pytest.approx(-math.log(_sigmoid(beta * (w - l) - gamma)), rel=1e-12)


def test_rpo_is_dpo_plus_beta_scaled_nll():
    beta, weight = 0.5, 0.2
    losses, metrics = build_method("rpo", {"beta": beta, "nll_weight": weight}).loss(
        _logprobs(POLICY, COUNTS), _logprobs(REFERENCE, COUNTS)
    )
    for i in range(2):
        dpo = -math.log(_sigmoid(beta * (_h("chosen", i) - _h("rejected", i))))
        nll = -POLICY["chosen"][i] / COUNTS["chosen"][i]
        assert losses[i].item() == pytest.approx(dpo + weight * beta * nll, rel=1e-12)
        assert metrics["nll"][i].item() == pytest.approx(nll)


@pytest.mark.parametrize("name", ["srpo", "dpo", "ipo", "simpo", "rpo"])
def test_gradients_match_finite_differences(name):
    method = build_method(name, {"beta": 0.8})
    keys = method.needs
    reference = _logprobs({k: REFERENCE[k] for k in keys}, {k: COUNTS[k] for k in keys})
    counts = {k: torch.tensor(COUNTS[k], dtype=torch.float64) for k in keys}
    inputs = tuple(torch.tensor(POLICY[k], dtype=torch.float64, requires_grad=True) for k in keys)

    def f(*sums):
        return method.loss(LogProbs(dict(zip(keys, sums)), counts), reference if method.uses_reference else None)[0]

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_paper_defaults():
    assert build_method("srpo").beta == 0.01 and build_method("srpo").alpha == 0.0
    assert build_method("dpo").beta == 0.1
    assert build_method("ipo").beta == 0.01
    assert build_method("simpo").beta == 50.0 and build_method("simpo").average_log_prob
    assert build_method("rpo").nll_weight == 1e-5
    assert set(build_method("srpo").needs) == set(KEYS6)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("srpo", {"alpha": 1.5}, "option 'alpha': input should be less than or equal to 1 (got 1.5)"),
        ("dpo", {"beta": -1}, "option 'beta': input should be greater than 0 (got -1)"),
        ("dpo", {"betta": 1}, "did you mean 'beta'"),
        ("ipo", {"beta": "strong"}, "option 'beta': input should be a valid number"),
        ("srpo", {"average_log_prob": "maybe"}, "should be a valid boolean"),
    ],
)
def test_bad_options_fail_clearly(name, options, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        build_method(name, options)


def test_string_values_from_the_command_line_are_coerced():
    method = build_options(registry.methods.get("srpo"), {"beta": "0.5", "average_log_prob": "true"}, "srpo")
    assert method.beta == 0.5 and method.average_log_prob is True
