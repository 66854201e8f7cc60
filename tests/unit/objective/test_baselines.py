"""The baselines' routing terms against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.objective import SPECS, logits_spec, prep_of
from vsraq_modifier.objective import router_kl, topk_mse


def test_topk_mse_by_hand():
    ref = torch.tensor([[3.0, 2.0, 0.0, 0.0], [0.0, 1.0, 5.0, 0.0]])
    z = torch.tensor([[2.0, 2.0, 9.0, 9.0], [0.0, 3.0, 4.0, 0.0]])
    # S* = {0,1} and {2,1}: errors 1, 0, 1, 4 -> mean 1.5 (other experts ignored)
    assert topk_mse(prep_of(z, ref, logits_spec(4, 2))).item() == pytest.approx(1.5)


def test_topk_mse_respects_mask():
    ref = torch.tensor([[3.0, 2.0, 0.0], [0.0, 1.0, 5.0]])
    z = torch.tensor([[2.0, 2.0, 0.0], [9.0, 9.0, 9.0]])
    prep = prep_of(z, ref, logits_spec(3, 1), mask=torch.tensor([True, False]))
    assert topk_mse(prep).item() == pytest.approx(1.0)


def test_router_kl_by_hand():
    ref = torch.tensor([[0.0, 0.0]])  # p* = (1/2, 1/2)
    z = torch.tensor([[math.log(3.0), 0.0]])  # p = (3/4, 1/4)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert router_kl(prep_of(z, ref, logits_spec(2, 1))).item() == pytest.approx(
        expected
    )


@pytest.mark.parametrize("fn", [topk_mse, router_kl])
@pytest.mark.parametrize("kind", sorted(SPECS))
def test_baseline_gradcheck(fn, kind):
    g = torch.Generator().manual_seed(8)
    ref = torch.randn(4, 8, generator=g, dtype=torch.float64)
    z0 = (
        ref + 0.3 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    ).requires_grad_()
    spec = SPECS[kind]()
    assert torch.autograd.gradcheck(lambda z: fn(prep_of(z, ref, spec)), (z0,))
