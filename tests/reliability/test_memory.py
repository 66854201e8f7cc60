"""Memory bounds of the routing objective (``vsraq_modifier/memory.py``).

Tolerances stated here:
- reference router logits: the estimate equals, byte for byte, what the AutoRound
  integration's ``ReferenceStore`` holds for the largest block (its layout is
  known: 2 bytes per logit, every calibration position);
- look-ahead activations: the estimate is at most 5 % under and at most 35 % over
  what autograd keeps for the backward pass of one look-ahead step
  (``saved_tensors_hooks``, parameters excluded), measured on the tiny Qwen3-MoE
  (two widths; measured -0.3 % and +0.5 %) and Mixtral (+29 %: no q/k norms),
  with the path's attention run and frozen (``lookahead_attention``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from vsraq_modifier.memory import (
    ENV_LIMIT,
    GIB,
    MemoryLimitError,
    check_memory,
    estimate_routing_memory,
    memory_limit_bytes,
)

#: estimate / measured look-ahead activations must lie in this range
ACTIVATION_RANGE = (0.95, 1.35)


@dataclass
class _Spec:
    num_experts: int


@dataclass
class _Site:
    layer: int
    spec: _Spec


class _Config:
    hidden_size, num_attention_heads, num_key_value_heads, head_dim = 64, 4, 2, 16
    intermediate_size = 64


SITES = [_Site(0, _Spec(8)), _Site(2, _Spec(16))]


def _by_hand(sites=SITES, **kwargs):
    """The estimate for the hand-checked 3-layer model, 100 tokens, 10 per step."""
    options = {"lookahead": True, **kwargs}
    return estimate_routing_memory(
        sites, num_layers=3, config=_Config(), tokens=100, batch_tokens=10, **options
    )


def test_reference_bytes_by_hand():
    est = _by_hand()
    # block 0 keeps its own router (8) and the look-ahead router (16)
    assert est.reference_bytes == 100 * (8 + 16) * 2
    assert (est.reference_layer, est.reference_routers) == (0, 2)
    # block 0 -> router of layer 2 through the dense layer 1 (run whole) and the
    # router's layer: 2 attention parts + 1 MLP + the router's experts
    attention = 6 * 64 + 5 * 64 + 5 * 32
    assert est.lookahead_layers == 2
    assert est.lookahead_bytes == 10 * 4 * (2 * attention + 4 * 64 + 16)
    no_ahead = _by_hand(lookahead=False)
    assert no_ahead.reference_bytes == 100 * 16 * 2 and no_ahead.lookahead_bytes == 0
    mse = _by_hand(routing_loss=False)
    assert mse.reference_bytes == est.reference_bytes and mse.lookahead_bytes == 0
    # lookahead_attention: reference, both path layers with an attention: each
    # keeps its reference output (64 values per token) instead of activations
    frozen = _by_hand(frozen_attention=[1, 2])
    assert frozen.reference_bytes == 100 * (8 + 16 + 2 * 64) * 2
    assert frozen.reference_hidden == 2 * 64
    assert frozen.lookahead_bytes == 10 * 4 * (2 * 5 * 64 + 4 * 64 + 16)
    assert "128 values of frozen look-ahead attention" in frozen.describe()
    # only the router of layer 2: block 0's look-ahead freezes layers 1 and 2
    # (the largest cache), block 1's layer 2 only
    only_last = _by_hand(SITES[1:], frozen_attention=[1, 2])
    assert only_last.reference_hidden == 2 * 64
    assert only_last.reference_bytes == 100 * (16 + 2 * 64) * 2
    # without a routing loss nothing is frozen
    assert _by_hand(routing_loss=False, frozen_attention=[1, 2]).reference_hidden == 0


def test_over_the_limit_names_estimate_and_options():
    est = estimate_routing_memory(
        SITES,
        num_layers=3,
        config=_Config(),
        tokens=10**6,
        batch_tokens=10,
        lookahead=True,
    )
    check_memory(est, None)
    check_memory(est, est.total_bytes)
    with pytest.raises(MemoryLimitError) as err:
        check_memory(est, est.total_bytes - 1)
    msg = str(err.value)
    for part in (
        "reference router logits",
        "1000000 tokens",
        "nsamples",
        "seqlen",
        "batch_size",
        "lookahead=False",
        ENV_LIMIT,
    ):
        assert part in msg, part


def test_limit_from_the_environment():
    assert memory_limit_bytes(environ={ENV_LIMIT: "2.5"}) == int(2.5 * GIB)
    for off in ("0", "off", "None"):
        assert memory_limit_bytes(environ={ENV_LIMIT: off}) is None
    for bad in ("lots", "-1", "inf"):
        with pytest.raises(ValueError, match=ENV_LIMIT):
            memory_limit_bytes(environ={ENV_LIMIT: bad})
    free = memory_limit_bytes(environ={})  # default: memory free on the device
    assert free is None or free > 0


def _saved_bytes(
    model, batch: int, seq: int, frozen: bool = False
) -> tuple[int, object, object]:
    """Bytes autograd keeps (parameters excluded) for one look-ahead step from
    decoder layer 0 to the next router, on the real layer inputs (``frozen``:
    with the path's attention outputs frozen at the reference)."""
    from vsraq_modifier.lookahead import next_router_path
    from vsraq_modifier.routers import find_routers
    from vsraq_modifier.routers.base import decoder_layers

    layers, sites = decoder_layers(model), find_routers(model)
    captured = {}

    def pre(_m, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured["in"] = (hidden.detach(), {k: v for k, v in kwargs.items()})

    ids = torch.randint(3, model.config.vocab_size, (batch, seq))
    handle = layers[1].register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad():
        model(ids)
    handle.remove()
    path = next_router_path(layers, sites, 0)
    hidden, kwargs = captured["in"]
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    attention = None
    if frozen:
        attention = []
        with torch.no_grad():
            path(hidden, record_attention=attention, **kwargs)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        path(hidden.clone().requires_grad_(True), attention=attention, **kwargs)
    return sum(seen.values()), sites, layers


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("qwen3_moe", {}),
        ("qwen3_moe", {"hidden_size": 128, "num_attention_heads": 8}),
        ("mixtral", {}),
    ],
)
@pytest.mark.parametrize("frozen", [False, True], ids=["full", "frozen"])
def test_lookahead_activations_within_tolerance(family, overrides, frozen):
    from vsraq_modifier.lookahead import attention_module
    from vsraq_modifier.testing import tiny_model

    model = tiny_model(family, **overrides)
    batch, seq = 2, 32
    measured, sites, layers = _saved_bytes(model, batch, seq, frozen)
    with_attention = [
        i for i, layer in enumerate(layers) if attention_module(layer) is not None
    ]
    est = estimate_routing_memory(
        sites,
        num_layers=len(layers),
        config=model.config,
        tokens=batch * seq,
        batch_tokens=batch * seq,
        lookahead=True,
        frozen_attention=with_attention if frozen else None,
    )
    low, high = ACTIVATION_RANGE
    assert low * measured <= est.lookahead_bytes <= high * measured, (
        est.lookahead_bytes,
        measured,
    )
