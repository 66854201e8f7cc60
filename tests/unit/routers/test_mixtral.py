"""The mixtral adapter on its own: it is registered for the family's model class,
finds the family's MoE routers, reads the routing settings from the config, and
route() decides like the router module (all variants and dtypes:
tests/unit/routers/test_adapters.py)."""

from __future__ import annotations

import torch

from tests.helpers.routers import assert_same_decision, randomise_router
from vsraq_modifier.routers import adapter_for, find_routers
from vsraq_modifier.testing import tiny_model


def test_adapter_spec_and_decision() -> None:
    model = tiny_model("mixtral")
    adapter = adapter_for(model)
    assert type(adapter).__module__ == "vsraq_modifier.routers.mixtral"
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
    hidden = torch.randn(
        33, text.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        out = router(hidden)
    assert_same_decision(out, spec, out[0])
