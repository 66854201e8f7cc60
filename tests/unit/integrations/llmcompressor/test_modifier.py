"""VSRAQModifier on its own: its VSRAQ fields are VSRAQConfig's, the options the
recipe set become the run's config, and a router the recipe quantizes cannot be
re-fitted."""

from __future__ import annotations

import pytest

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.integrations.llmcompressor.modifier import (
    VSRAQ_FIELDS,
    VSRAQModifier,
    refit_config,
)
from vsraq_modifier.testing import tiny_model


def test_the_modifier_declares_vsraq_config_s_fields() -> None:
    assert VSRAQ_FIELDS == tuple(VSRAQConfig.model_fields)
    for name, field in VSRAQConfig.model_fields.items():
        mine = VSRAQModifier.model_fields[name]
        assert mine.annotation == field.annotation, name
        assert mine.default == field.default, name
        assert mine.description == field.description, name
        assert mine.metadata == field.metadata, name  # ranges


def test_only_the_options_set_reach_the_run() -> None:
    m = VSRAQModifier(scheme="W4A16", targets=["Linear"], loss="router_kl")
    assert m.vsraq == VSRAQConfig(loss="router_kl")
    assert m.vsraq.refit_method == "ridge"  # auto: on with a routing loss
    assert VSRAQModifier(scheme="W4A16", loss="mse").vsraq.refit_method == "none"
    with pytest.raises(ValueError, match="structure_weight has no effect"):
        VSRAQModifier(scheme="W4A16", loss="router_kl", structure_weight=1.0)
    with pytest.raises(ValueError, match="enable_torch_compile"):
        VSRAQModifier(scheme="W4A16", enable_torch_compile=True)
    # VSRAQModifier's own default is off; a saved recipe lists every field
    assert VSRAQModifier(scheme="W4A16").enable_torch_compile is False
    saved = VSRAQModifier(scheme="W4A16", loss="mse").model_dump()
    assert VSRAQModifier(**saved).vsraq == VSRAQConfig(loss="mse")


def test_a_quantized_router_cannot_be_refitted() -> None:
    model = tiny_model("qwen3_moe", num_hidden_layers=1)
    asked = VSRAQConfig(router_refit="ridge")
    assert refit_config(model, asked) is asked  # full precision: fine
    model.model.layers[0].mlp.gate.quantization_scheme = object()  # as targeted
    with pytest.raises(
        ValueError, match=r"quantizes model\.layers\.0\.mlp\.gate.*ignore"
    ):
        refit_config(model, asked)
    # the default only asked for it where it can run: off, and said so
    auto = refit_config(model, VSRAQConfig())
    assert auto.router_refit == "none" and auto.refit_method == "none"
    assert refit_config(model, VSRAQConfig(loss="mse")).refit_method == "none"
