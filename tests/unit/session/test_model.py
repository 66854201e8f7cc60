"""ModelRouting: one router finder for both hosts; a dense model is an error for
a routing loss and an empty routing for loss=mse."""

from __future__ import annotations

import pytest

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.routers import UnsupportedModelError
from vsraq_modifier.session import ModelRouting
from vsraq_modifier.testing import tiny_model


def _dense():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return AutoModelForCausalLM.from_config(config)


def test_routers_layers_and_names() -> None:
    model = tiny_model("qwen3_moe", num_hidden_layers=3)
    routing = ModelRouting(model, VSRAQConfig())
    assert [s.layer for s in routing.sites] == [0, 1, 2]
    assert routing.name_of(model.model.layers[2]) == "model.layers.2"
    assert routing.index_of(model.model.layers[1]) == 1
    assert routing.index_of(model.lm_head) is None
    assert "MoE routers at layers [0, 1, 2]; look-ahead on" in routing.describe()


def test_dense_model() -> None:
    with pytest.raises(UnsupportedModelError):
        ModelRouting(_dense(), VSRAQConfig())
    routing = ModelRouting(_dense(), VSRAQConfig(loss="mse"))
    assert routing.sites == [] and not routing.needs_session(0)
    assert (
        routing.guard_memory(
            device="cpu", tokens=10, batch_tokens=10, activation_bytes=4
        )
        is None
    )


def test_memory_estimate_counts_every_router() -> None:
    model = tiny_model("qwen3_moe", num_hidden_layers=2)
    routing = ModelRouting(model, VSRAQConfig())
    estimate = routing.guard_memory(
        device="cpu", tokens=1000, batch_tokens=100, activation_bytes=4
    )
    experts = model.config.num_experts
    # own logits of both routers, kept for one block at a time, plus look-ahead
    assert estimate.reference_bytes >= 1000 * experts * 2
    assert estimate.lookahead_bytes > 0


def test_router_refit_runs_in_one_process_only(monkeypatch) -> None:
    import vsraq_modifier.session.model as session_model

    model = tiny_model("qwen3_moe", num_hidden_layers=1)
    asked = ModelRouting(model, VSRAQConfig(router_refit="ridge"))
    assert asked.refit_options() is not None
    monkeypatch.setattr(session_model, "world_size", lambda: 2)
    # each rank would fit its own shard: the ranks' routers would differ
    with pytest.raises(ValueError, match="runs in one process only"):
        asked.refit_options()
    assert ModelRouting(model, VSRAQConfig(router_refit="none")).refit_options() is None
    # the default (auto) is switched off there instead, with a log line
    assert ModelRouting(model, VSRAQConfig()).refit_options() is None


def test_a_refit_target_that_does_not_suit_a_router_is_refused_before_tuning() -> None:
    sigmoid = tiny_model("deepseek_v3", num_hidden_layers=2)
    softmax = tiny_model("qwen3_moe", num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"router_refit_target: target='centred'.*"
                       r"sigmoid router.*decoder layer 1, mlp\.gate"):
        ModelRouting(sigmoid, VSRAQConfig(router_refit_target="centred"))
    with pytest.raises(ValueError, match="target='sigmoid' needs a sigmoid router"):
        ModelRouting(softmax, VSRAQConfig(router_refit_target="sigmoid"))
    # the target the run fits with
    for model, target in ((sigmoid, "logits"), (softmax, "centred")):
        routing = ModelRouting(model, VSRAQConfig(router_refit_target=target))
        options = routing.refit_options()
        assert options is not None and options.target == target
    assert ModelRouting(sigmoid, VSRAQConfig()).refit_options().target == "auto"
    # off: nothing to check (and setting it with the re-fit off is refused)
    assert ModelRouting(sigmoid, VSRAQConfig(loss="mse")).refit_options() is None
