"""Value alignment: hand values, softmax shift invariance, gradcheck."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.objective import (
    SPECS,
    logits_spec,
    prep_of,
    softmax_spec,
    weights_of,
)
from vsraq_modifier.objective import value_term


def _value(z, ref, spec, target):
    prep = prep_of(z, ref, spec)
    return value_term(prep, weights_of(prep), target)


def test_value_by_hand():
    # scores = logits, weights = selected logits; one token, so w = 1
    spec = logits_spec(3, 1)
    ref = torch.tensor([[2.0, 1.0, 0.0]])  # S* = {0}: g* = [2, 0, 0]
    z = torch.tensor([[1.0, 1.5, 0.0]])  # S = {1}: g = [0, 1.5, 0]
    # weights: ||g - g*||^2 / ||g*||^2 = (4 + 2.25) / 4
    assert float(_value(z, ref, spec, "scores")) == pytest.approx(6.25 / 4)
    # logits (not centred: not a softmax router): (1 + 0.25) / 5
    assert float(_value(z, ref, spec, "logits")) == pytest.approx(1.25 / 5)
    assert float(_value(z, ref, spec, "both")) == pytest.approx(6.25 / 4 + 0.25)


def test_value_weights_tokens_by_sensitivity():
    spec = logits_spec(3, 1)
    ref = torch.tensor([[2.0, 1.0, 0.0], [3.0, 0.0, 0.0]])  # margins 1 and 3
    z = ref + torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    prep = prep_of(z, ref, spec)
    w = weights_of(prep)
    assert w[0] > w[1]
    # logits part: per-token error 1 each, ||z*||^2 = 5 and 9
    expected = float((w * torch.tensor([1.0, 1.0])).mean()) / 7.0
    assert float(value_term(prep, w, "logits")) == pytest.approx(expected, rel=1e-6)


def test_softmax_logit_part_ignores_a_shared_shift():
    spec = softmax_spec()
    ref = torch.randn(6, 8)
    assert float(_value(ref + 3.0, ref, spec, "both")) == pytest.approx(0.0, abs=1e-10)
    # but a sigmoid / logits router does see it
    assert float(_value(ref + 3.0, ref, SPECS["gptoss"](), "logits")) > 0.1


def test_unknown_target_is_an_error():
    ref = torch.randn(2, 8)
    prep = prep_of(ref.clone(), ref, softmax_spec())
    with pytest.raises(ValueError, match="value_target"):
        value_term(prep, weights_of(prep), "weights")


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("target", ["logits", "scores", "both"])
def test_value_gradcheck(kind, target):
    g = torch.Generator().manual_seed(1)
    spec = SPECS[kind]()
    ref = torch.randn(5, 8, generator=g, dtype=torch.float64)
    z0 = ref + 0.3 * torch.randn(5, 8, generator=g, dtype=torch.float64)
    z0.requires_grad_()
    assert _value(z0, ref, spec, target).item() > 0
    assert torch.autograd.gradcheck(lambda z: _value(z, ref, spec, target), (z0,))
