"""Errors of the Python API (router specs, adapters, look-ahead, taps, metrics hooks,
objective, guards, import hook) that no other test raises: each names the problem
and the fix (docs/errors.md maps every error to its test)."""

from __future__ import annotations

import dataclasses
import types
import warnings

import pytest
import torch
from torch import nn

from vsraq_modifier.routers import find_routers
from vsraq_modifier.routers.base import decoder_layers
from vsraq_modifier.routing import RouterSpec, route
from vsraq_modifier.testing import tiny_model


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_group=3), r"n_group=3 must divide num_experts=16"),
        (dict(n_group=4, topk_group=5), r"topk_group=5 must be in 1..n_group"),
    ],
)
def test_group_settings_of_the_model_config(kwargs, match):
    model = tiny_model("deepseek_v3", **kwargs)
    with pytest.raises(ValueError, match=match):
        find_routers(model)


def test_logits_of_another_width_than_the_spec():
    with pytest.raises(
        ValueError, match="router logits have 5 experts, spec expects 8"
    ):
        route(torch.zeros(3, 5), RouterSpec(8, 2))


def test_model_without_a_decoder_layer_list():
    with pytest.raises(ValueError, match="no decoder layer list found"):
        decoder_layers(nn.Linear(2, 2))


def test_adapter_family_registered_twice():
    from vsraq_modifier.routers import register_adapter
    from vsraq_modifier.routers.qwen3_moe import Qwen3MoeAdapter

    clash = type("Clash", (Qwen3MoeAdapter,), {})
    with pytest.raises(ValueError, match="'qwen3_moe' registered twice"):
        register_adapter(clash)


def test_lookahead_whose_router_never_runs():
    from vsraq_modifier.lookahead import LookaheadPath, router_logits_through

    model = tiny_model("qwen3_moe")
    layers, sites = decoder_layers(model), find_routers(model)
    hidden = torch.randn(1, 4, model.config.hidden_size)
    rotary = model.model.rotary_emb(hidden, torch.arange(4)[None])
    # the router of layer 2 is not on a path made of layer 1 only
    with pytest.raises(RuntimeError, match="router of layer 2 .* did not run"):
        router_logits_through(
            [layers[1]],
            sites[2],
            hidden,
            position_embeddings=rotary,
            attention_mask=None,
        )
    with pytest.raises(ValueError, match="at least the router's layer"):
        LookaheadPath([], sites[1])


def test_taps_on_a_router_that_does_not_run():
    from vsraq_modifier.session.taps import RouterTaps

    model = tiny_model("qwen3_moe")
    layer, site = decoder_layers(model)[0], find_routers(model)[0]
    layer.unused = nn.Linear(model.config.hidden_size, 8, bias=False)
    ghost = dataclasses.replace(site, name="unused", router=layer.unused)
    taps = RouterTaps(layer, [ghost], None, lambda record: None)
    handles = taps.attach()
    hidden = torch.randn(1, 4, model.config.hidden_size)
    rotary = model.model.rotary_emb(hidden, torch.arange(4)[None])
    try:
        with pytest.raises(RuntimeError, match=r"\['unused'\] .* did not run"):
            layer(hidden, position_embeddings=rotary, attention_mask=None)
    finally:
        for h in handles:
            h.remove()


def test_block_session_without_a_router_record():
    from vsraq_modifier.session import BlockSession, Phase

    session = BlockSession(0, nn.Linear(2, 2), [], None, objective=None, loss="mse")
    session.phase = Phase.TUNE  # a tuning step whose forward bypassed the taps
    with pytest.raises(RuntimeError, match="no router record.*torch.compile"):
        session.step_loss(torch.zeros(()), [0])


def test_router_hooks_misuse():
    from vsraq_modifier.metrics.hooks import (
        RouterForcing,
        RoutingCapture,
        forced_output,
    )

    model = tiny_model("qwen3_moe")
    sites = find_routers(model)
    with pytest.raises(ValueError, match="more than one router per decoder layer"):
        RoutingCapture([sites[0], sites[0]])
    spec = sites[0].spec
    logits = torch.randn(3, spec.num_experts)
    idx = torch.zeros(3, spec.top_k, dtype=torch.long)
    with pytest.raises(TypeError, match="forcing expects"):
        forced_output((logits, logits), logits, idx, spec)
    ids = torch.randint(0, 128, (1, 6))
    with RouterForcing(sites) as forcing, torch.no_grad():
        with pytest.raises(
            KeyError, match="no forced expert choice for decoder layer 0"
        ):
            model(ids)
        forcing.targets = {s.layer: torch.zeros(2, 1, dtype=torch.long) for s in sites}
        with pytest.raises(ValueError, match="layer 0: forced indices \\(2, 1\\)"):
            model(ids)


def test_objective_pair_of_another_width():
    from vsraq_modifier.config import VSRAQConfig
    from vsraq_modifier.objective import RouterPair, routing_terms

    z = torch.zeros(4, 6, requires_grad=True)
    pair = RouterPair(z, torch.zeros(4, 6), RouterSpec(8, 2))
    with pytest.raises(ValueError, match="do not end in spec.num_experts=8"):
        routing_terms(pair, VSRAQConfig())


def test_set_nll_k_out_of_range():
    from vsraq_modifier.objective import log_esp

    with pytest.raises(ValueError, match="k=5 must be in 1..4"):
        log_esp(torch.zeros(2, 4), 5)


def test_guards_direct():
    from vsraq_modifier.guards import (
        NonFiniteTuningError,
        check_calibration_samples,
        check_finite_block,
    )

    check_calibration_samples("NeelNanda/pile-10k", 2048)  # a name: the host's
    check_calibration_samples([{"input_ids": torch.zeros(1, 8)}], 8)
    block = nn.Linear(2, 2)
    check_finite_block(block, 3)
    with torch.no_grad():
        block.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteTuningError, match="layer 3: after tuning.*weight"):
        check_finite_block(block, 3)


def test_import_hook_failure_warns_and_keeps_the_host_working():
    import _vsraq_modifier_hook as hook

    module = types.ModuleType("llmcompressor.modifiers.factory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hook._run_callback("vsraq_modifier.no_such_module:f", module)
    (warning,) = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert "vsraq-modifier could not register with" in str(warning.message)
    assert "docs/errors.md" in str(warning.message)


def test_unknown_tiny_family():
    from vsraq_modifier.testing import tiny_config

    with pytest.raises(KeyError, match="no tiny config for 'llama'"):
        tiny_config("llama")


def test_calibration_windows_and_dtype_names():
    from vsraq_modifier.calibration import calibration_samples, split_tokens
    from vsraq_modifier.metrics.loading import resolve_dtype

    with pytest.raises(ValueError, match="need >= 1 and >= 2"):
        calibration_samples(torch.arange(100), nsamples=0, seqlen=10, seed=0)
    with pytest.raises(ValueError, match="use 'calibration' or 'validation'"):
        split_tokens(torch.arange(10), "test")
    with pytest.raises(ValueError, match="dtype 'fp8': use auto"):
        resolve_dtype("fp8", "cpu")
