"""Helpers shared by the router adapter tests (unit and integration): randomise a
router module and compare its decision with :func:`vsraq_modifier.routing.route`."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vsraq_modifier.routing import RouterSpec, route


def randomise_router(router: nn.Module, seed: int, ties: bool = False) -> nn.Module:
    """A copy of ``router`` with random weights (std 1) and, where it has one, a
    random bias / correction bias. With ``ties``, the second half of the experts
    duplicates the first half and expert 1 duplicates expert 0, so logits tie
    exactly within a group and across groups."""
    router = copy.deepcopy(router)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("weight", "bias", "e_score_correction_bias"):
            t = getattr(router, name, None)
            if not isinstance(t, torch.Tensor):
                continue
            scale = 1.0 if name == "weight" else 0.1
            new = torch.randn(t.shape, generator=g) * scale
            if ties:
                half = new.shape[0] // 2
                new[1] = new[0]
                new[half:] = new[:half]
            t.copy_(new.to(t.dtype))
    return router


def aligned(indices: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Indices sorted per row, with weights permuted alike (for sorted=False)."""
    order = indices.argsort(dim=-1)
    return indices.gather(-1, order), weights.gather(-1, order)


def assert_same_decision(output: tuple, spec: RouterSpec, logits: torch.Tensor) -> None:
    """``route(logits, spec)`` reproduces the router output (logits, w, idx)
    exactly: same dtypes, same set and weights, same order where sorted."""
    _, weights, indices = output
    r = route(logits, spec)
    assert r.weights.dtype == weights.dtype
    assert r.indices.dtype == indices.dtype
    if spec.sorted_topk and not spec.group_limited:
        assert torch.equal(r.indices, indices)
        assert torch.equal(r.weights, weights)
    else:
        ri, rw = aligned(r.indices, r.weights)
        mi, mw = aligned(indices, weights)
        assert torch.equal(ri, mi)
        assert torch.equal(rw, mw)


def check_family_adapter(family: str) -> None:
    """One family's adapter on its own: registered for the family's model class,
    finds the family's MoE routers, reads the routing settings from the config,
    and route() decides like the router module."""
    from vsraq_modifier.routers import adapter_for, find_routers
    from vsraq_modifier.testing import tiny_model

    model = tiny_model(family)
    adapter = adapter_for(model)
    assert type(adapter).__module__ == f"vsraq_modifier.routers.{family}"
    sites = find_routers(model)
    assert sites and all(type(s.adapter) is type(adapter) for s in sites)
    site = sites[-1]
    router = randomise_router(site.router, seed=3)
    spec = adapter.spec_for(model.config, router, site.block)
    text = model.config.get_text_config()
    experts = (
        getattr(text, "num_local_experts", None)
        or getattr(text, "n_routed_experts", None)
        or getattr(text, "num_experts")
    )
    assert spec.num_experts == experts
    assert 1 <= spec.top_k <= spec.num_experts
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(33, text.hidden_size, generator=g)
    with torch.no_grad():
        out = router(hidden)
    assert_same_decision(out, spec, out[0])
