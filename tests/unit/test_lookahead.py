"""The look-ahead path reproduces the next router's logits and carries gradient."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.lookahead import next_router_path
from vsraq_modifier.routers import find_routers
from vsraq_modifier.routers.base import decoder_layers
from vsraq_modifier.testing import TINY_FAMILIES, tiny_model


def _capture(model, ids):
    """Each decoder layer's input hidden states and kwargs, and each router's logits."""
    layers = decoder_layers(model)
    inputs, logits = {}, {}
    handles = []
    for i, layer in enumerate(layers):

        def pre(mod, args, kwargs, i=i):
            h = args[0] if args else kwargs["hidden_states"]
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            inputs[i] = (h.detach(), kw)

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    sites = find_routers(model)
    for s in sites:
        handles.append(
            s.router.register_forward_hook(
                lambda m, a, o, s=s: logits.__setitem__(s.layer, s.logits(o).detach())
            )
        )
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return layers, sites, inputs, logits


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_lookahead_matches_model_and_has_gradient(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(
        0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)
    )
    layers, sites, inputs, ref_logits = _capture(model, ids)
    moe_layers = [s.layer for s in sites]
    for i in range(len(layers)):
        path = next_router_path(layers, sites, i)
        later = [m for m in moe_layers if m > i]
        if not later:
            assert path is None
            continue
        assert path.site.layer == later[0]
        # the output of layer i is the input of layer i+1
        h, kw = inputs[i + 1]
        x = h.clone().requires_grad_(True)
        out = path(x, **kw)
        torch.testing.assert_close(out, ref_logits[later[0]], rtol=1e-5, atol=1e-5)
        out.float().pow(2).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
