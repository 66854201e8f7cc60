"""Models without a supported MoE router fail with an error that says what to do."""

from __future__ import annotations

import pytest
import torch
import transformers

from vsraq_modifier.routers import UnsupportedModelError, find_routers
from vsraq_modifier.testing import TINY_FAMILIES, tiny_dense_model, tiny_model

SMALL = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=64,
)


def _build(config_cls: str, **kw) -> torch.nn.Module:
    config = getattr(transformers, config_cls)(**{**SMALL, **kw})
    return transformers.AutoModelForCausalLM.from_config(config)


def _assert_helpful(err: UnsupportedModelError, model_class: str) -> None:
    msg = str(err)
    assert model_class in msg
    for family in TINY_FAMILIES:
        assert family in msg
    assert "vsraq_modifier/routers/<family>.py" in msg
    assert "@register_adapter" in msg


def test_dense_model_is_refused_by_name():
    model = tiny_dense_model()
    with pytest.raises(UnsupportedModelError) as info:
        find_routers(model)
    _assert_helpful(info.value, "LlamaForCausalLM")
    assert "'llama'" in str(info.value)


def test_unsupported_moe_family_is_refused_by_name():
    model = _build("PhimoeConfig", num_local_experts=4, num_experts_per_tok=2)
    with pytest.raises(UnsupportedModelError) as info:
        find_routers(model)
    _assert_helpful(info.value, "PhimoeForCausalLM")
    assert "'phimoe'" in str(info.value)


def test_supported_family_without_sparse_layers_is_refused():
    model = tiny_model("qwen2_moe", mlp_only_layers=[0, 1, 2])
    with pytest.raises(UnsupportedModelError) as info:
        find_routers(model)
    _assert_helpful(info.value, "Qwen2MoeForCausalLM")
    assert "dense" in str(info.value)
