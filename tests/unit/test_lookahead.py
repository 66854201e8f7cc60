"""The look-ahead path reproduces the next router's logits and carries gradient."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.lookahead import attention_module, next_router_path
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


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_frozen_attention_gives_the_same_logits_and_no_attention_gradient(
    family: str,
) -> None:
    """``lookahead_attention: reference``: with the attention outputs recorded on
    the same input, the path gives the same logits; the gradient reaches the
    block's output through the residual stream but not the frozen attentions."""
    model = tiny_model(family)
    ids = torch.randint(
        0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)
    )
    layers, sites, inputs, _ = _capture(model, ids)
    checked = 0
    for i in range(len(layers) - 1):
        path = next_router_path(layers, sites, i)
        if path is None:
            continue
        h, kw = inputs[i + 1]
        recorded: list = []
        with torch.no_grad():
            full = path(h, record_attention=recorded, **kw)
        assert len(recorded) == len(path.layers)
        has = [r is not None for r in recorded]
        assert [path.first_layer + j for j, x in enumerate(has) if x] == (
            path.attention_layers
        )
        params = [
            p
            for layer in path.layers
            if attention_module(layer) is not None
            for p in attention_module(layer).parameters()
        ]
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        x = h.clone().requires_grad_(True)
        out = path(x, attention=recorded, **kw)
        torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)
        out.float().pow(2).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is None for p in params)  # the attention did not run
        for p in params:
            p.requires_grad_(False)
        # after the call the attentions run again (nothing left patched)
        with torch.no_grad():
            again = path(h, **kw)
        torch.testing.assert_close(again, full, rtol=1e-5, atol=1e-5)
        checked += bool(path.attention_layers)
    if family == "nemotron_h":
        assert checked == 0  # single-mixer blocks: no self_attn, run whole
    else:
        assert checked > 0


def test_frozen_attention_of_another_shape_is_refused() -> None:
    model = tiny_model("qwen3_moe")
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    layers, sites, inputs, _ = _capture(model, ids)
    path = next_router_path(layers, sites, 0)
    h, kw = inputs[1]
    recorded: list = []
    with torch.no_grad():
        path(h, record_attention=recorded, **kw)
    with pytest.raises(ValueError, match="frozen attention output"):
        path(
            h[:1],
            attention=[recorded[0]],
            **{
                **kw,
                "position_embeddings": tuple(t[:1] for t in kw["position_embeddings"]),
            },
        )
    with pytest.raises(ValueError, match="2 frozen attention outputs for a path of 1"):
        path(h, attention=[recorded[0], None], **kw)
