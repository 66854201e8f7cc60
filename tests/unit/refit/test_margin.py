"""The convex margin refinement (vsraq_modifier/refit_margin.py)."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.refit import RefitOptions, fit_router, jaccard
from vsraq_modifier.refit.margin import margin_refine, supports_refine
from vsraq_modifier.routing import RouterSpec

SPEC = RouterSpec(num_experts=8, top_k=2, normalize=True)


def test_refinement_lowers_its_convex_objective_and_fixes_flips_in_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=g, dtype=torch.float64)
    w = torch.randn(8, 16, generator=g, dtype=torch.float64)
    xq = x + 0.4 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ref = x @ w.T
    ridge, _, _ = fit_router(
        w, None, SPEC, xq, ref, options=RefitOptions(method="ridge", ridge=1e-3)
    )
    refined = margin_refine(xq, ref, ridge.weight, SPEC, iters=30, rho=0.1)
    before = jaccard((xq @ ridge.weight.T).float(), ref.float(), SPEC)
    after = jaccard((xq @ refined.T).float(), ref.float(), SPEC)
    assert after > before


def test_refinement_is_refused_for_sigmoid_routers():
    spec = RouterSpec(num_experts=8, top_k=2, score_fn="sigmoid", bias=torch.zeros(8))
    assert not supports_refine(spec) and supports_refine(SPEC)
    with pytest.raises(ValueError, match="softmax or logits"):
        margin_refine(
            torch.zeros(4, 3, dtype=torch.float64),
            torch.zeros(4, 8, dtype=torch.float64),
            torch.zeros(8, 3, dtype=torch.float64),
            spec,
            1,
            1.0,
        )
