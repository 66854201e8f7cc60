"""Reference margins, temperature and sensitivity weights against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.objective import logits_spec, prep_of, weights_of
from vsraq_modifier.objective import (
    default_temperature,
    sensitivity_margin,
    sensitivity_weights,
)

REF = torch.tensor(
    [
        [4.0, 3.0, 1.0, 0.0],  # margin 3 - 1 = 2
        [4.0, 2.0, 1.5, 0.0],  # margin 0.5
        [1.0, 1.0, 1.0, 1.0],  # tie: margin 0
        [9.0, -9.0, 9.0, -9.0],  # padding (would be margin 18)
    ]
)
MASK = torch.tensor([True, True, True, False])


def test_margins_and_default_weights_by_hand():
    prep = prep_of(REF.clone(), REF, logits_spec(4, 2), mask=MASK)
    m = sensitivity_margin(prep)
    assert m.tolist() == [2.0, 0.5, 0.0]
    # median 0.5 > 0.1 * mean (0.083): tau = 0.5
    assert default_temperature(m) == pytest.approx(0.5)
    e = [math.exp(-4.0), math.exp(-1.0), 1.0]
    expected = [3 * x / sum(e) for x in e]
    assert weights_of(prep).tolist() == pytest.approx(expected, rel=1e-6)
    assert float(weights_of(prep).mean()) == pytest.approx(1.0)


def test_padding_does_not_move_tau_or_rescaling():
    spec = logits_spec(4, 2)
    with_pad = weights_of(prep_of(REF.clone(), REF, spec, mask=MASK))
    without = weights_of(prep_of(REF[:3].clone(), REF[:3], spec))
    assert torch.equal(with_pad, without)


def test_explicit_temperature():
    prep = prep_of(REF[:3].clone(), REF[:3], logits_spec(4, 2))
    w = weights_of(prep, temperature=2.0)
    e = [math.exp(-1.0), math.exp(-0.25), 1.0]
    assert w.tolist() == pytest.approx([3 * x / sum(e) for x in e], rel=1e-6)


def test_tau_floor_when_most_tokens_tie():
    # median 0 (3 of 4 tied): tau = 0.1 * mean = 0.1 * 1.0
    m = torch.tensor([0.0, 0.0, 0.0, 4.0])
    assert default_temperature(m) == pytest.approx(0.1)
    assert default_temperature(torch.zeros(5)) == pytest.approx(1e-6)


def test_no_boundary_gives_uniform_weights():
    # k == E: nothing is unselected, every margin is inf
    ref = torch.randn(3, 4)
    prep = prep_of(ref.clone(), ref, logits_spec(4, 4))
    assert torch.isinf(sensitivity_margin(prep)).all()
    assert torch.equal(weights_of(prep), torch.ones(3))


def test_tokens_without_boundary_get_zero_weight():
    w = sensitivity_weights(torch.tensor([1.0, float("inf"), 1.0]))
    assert w.tolist() == [1.5, 0.0, 1.5]


def test_group_limited_margin_is_the_smaller_stage():
    # groups {0,1,2} and {3,4,5}; group scores: top-2 sums 9 and 5.5
    spec = logits_spec(6, 2, n_group=2, topk_group=1)
    ref = torch.tensor([[5.0, 4.0, 0.0, 4.5, 1.0, 0.0]])
    prep = prep_of(ref.clone(), ref, spec)
    # expert stage: min(5, 4) - 0 = 4 (expert 3 is in the rejected group: ignored)
    # group stage: 9 - 5.5 = 3.5
    assert sensitivity_margin(prep).tolist() == [3.5]
