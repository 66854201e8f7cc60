"""The re-fit's solve helpers: the target each router family gets, and the
boundary weights."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.refit import solve
from vsraq_modifier.refit.solve import boundary_weights, resolved_target
from vsraq_modifier.routers import find_routers
from vsraq_modifier.testing import tiny_model


def test_targets_by_family_and_boundary_weights() -> None:
    softmax = find_routers(tiny_model("qwen3_moe", num_hidden_layers=1))[0].spec
    sigmoid = find_routers(tiny_model("deepseek_v3", num_hidden_layers=2))[0].spec
    assert resolved_target(softmax, "auto") == "centred"
    assert resolved_target(sigmoid, "auto") == "logits"
    z = torch.randn(5, softmax.num_experts)
    w = boundary_weights(z, softmax)
    assert w.shape == z.shape
    assert torch.all((w.sum(-1) > 0) & (w.sum(-1) <= 2 + 1e-6))  # k-th and (k+1)-th


def _naive(x, y, w, reg, prior, s, ones):
    """The per-expert normal equations written out, one expert at a time."""
    out = []
    for j in range(prior.shape[0]):
        phi = s[:, j, None] * x
        if ones:
            phi = torch.cat([phi, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        gram = phi.T @ (phi * w[:, j, None]) + torch.diag(reg[j])
        rhs = phi.T @ (w[:, j] * y[:, j]) + reg[j] * prior[j]
        out.append(torch.linalg.solve(gram, rhs))
    return torch.stack(out)


@pytest.mark.parametrize("ones", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("budget", [None, 1])
def test_per_expert_solve_matches_the_normal_equations(
    monkeypatch, ones, sparse, budget
) -> None:
    """Stacked Gram products (dense weights; in groups of one expert and chunks of
    one token with the smallest memory budget) and the per-expert path (sparse
    weights) solve the same weighted ridge problem."""
    if budget is not None:
        monkeypatch.setattr(solve, "GROUP_BYTES", budget)
        monkeypatch.setattr(solve, "CHUNK_BYTES", budget)
    g = torch.Generator().manual_seed(0)
    t, p, e = 40, 6, 5
    x = torch.randn(t, p, dtype=torch.float64, generator=g)
    y = torch.randn(t, e, dtype=torch.float64, generator=g)
    s = torch.rand(t, e, dtype=torch.float64, generator=g)
    w = torch.rand(t, e, dtype=torch.float64, generator=g)
    if sparse:
        w = w * (torch.rand(t, e, generator=g) < 0.3)
    q = p + int(ones)
    reg = torch.rand(e, q, dtype=torch.float64, generator=g) + 0.1
    prior = torch.randn(e, q, dtype=torch.float64, generator=g)
    got = solve._solve(x, y, w, reg, prior, s=s, ones=ones)
    torch.testing.assert_close(got, _naive(x, y, w, reg, prior, s, ones))
