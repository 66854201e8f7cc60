"""flip_cap_scale: the largest factor on the routing terms that overturns at most
a share of the host's step signs, in closed form."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.objective import flip_cap_scale


def _flips(gh: torch.Tensor, gr: torch.Tensor, scale: float) -> float:
    moved = gh != 0
    return float((torch.sign(gh + scale * gr) != torch.sign(gh))[moved].float().mean())


def test_cap_meets_the_share_and_is_the_largest_such_factor() -> None:
    torch.manual_seed(0)
    p = [torch.zeros(1000), torch.zeros(10, 30)]
    gh = [torch.randn(1000), torch.randn(10, 30)]
    gr = [3 * torch.randn(1000), 3 * torch.randn(10, 30)]
    cap = flip_cap_scale(gh, gr, p, 0.05)
    a, b = torch.cat([g.reshape(-1) for g in gh]), torch.cat([g.reshape(-1) for g in gr])
    assert cap.before == pytest.approx(_flips(a, b, 1.0))
    assert cap.before > 0.3 and 0 < cap.scale < 1
    assert cap.after == pytest.approx(_flips(a, b, cap.scale)) and cap.after <= 0.05
    assert _flips(a, b, cap.scale * 1.01) > 0.05  # a larger factor breaks it


def test_no_cap_when_the_routing_terms_rarely_overturn() -> None:
    gh, gr = [torch.ones(100)], [torch.full((100,), 0.5)]
    gr[0][:3] = -2.0  # 3 % opposing and larger
    cap = flip_cap_scale(gh, gr, [torch.zeros(100)], 0.05)
    assert (cap.scale, cap.before, cap.after) == (1.0, 0.03, 0.03)


def test_parameters_the_host_does_not_move_are_free_and_none_grads_count_zero() -> None:
    gh = [torch.zeros(50), None]
    gr = [torch.randn(50), torch.randn(5)]
    cap = flip_cap_scale(gh, gr, [torch.zeros(50), torch.zeros(5)], 0.0)
    assert cap.scale == 1.0 and cap.before == 0.0


def test_share_zero_gives_no_flip_and_bad_share_is_refused() -> None:
    gh, gr = [torch.tensor([1.0, -1.0, 2.0])], [torch.tensor([-4.0, 1.0, -1.0])]
    cap = flip_cap_scale(gh, gr, [torch.zeros(3)], 0.0)
    assert cap.after == 0.0 and cap.scale == pytest.approx(0.25, rel=1e-5)
    with pytest.raises(ValueError, match="share"):
        flip_cap_scale(gh, gr, [torch.zeros(3)], 1.5)
