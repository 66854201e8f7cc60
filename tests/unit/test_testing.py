"""The tiny test models: every family builds and runs, the same seed gives the same
weights, overrides apply, and the dense builder has no router."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.routers import UnsupportedModelError, find_routers
from vsraq_modifier.testing import (
    TINY_FAMILIES,
    tiny_config,
    tiny_dense_config,
    tiny_dense_model,
    tiny_model,
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_each_family_is_a_small_moe_that_runs(family: str) -> None:
    model = tiny_model(family)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert not model.training and find_routers(model)
    logits = model(torch.randint(0, 128, (1, 8))).logits
    assert logits.shape == (1, 8, 128) and torch.isfinite(logits).all()


def test_seed_and_overrides() -> None:
    assert _same_weights(tiny_model("olmoe", seed=3), tiny_model("olmoe", seed=3))
    assert not _same_weights(tiny_model("olmoe", seed=3), tiny_model("olmoe", seed=4))
    assert tiny_config("qwen3_moe", num_hidden_layers=1).num_hidden_layers == 1
    assert tiny_model("mixtral", dtype=torch.bfloat16).lm_head.weight.dtype == (
        torch.bfloat16
    )
    with pytest.raises(KeyError, match="no tiny config for 'llama'; known: "):
        tiny_config("llama")


def test_dense_builder() -> None:
    config = tiny_dense_config(num_hidden_layers=2, vocab_size=64)
    assert (config.model_type, config.num_hidden_layers, config.vocab_size) == (
        "llama",
        2,
        64,
    )
    model = tiny_dense_model(seed=1)
    assert _same_weights(model, tiny_dense_model(seed=1)) and not model.training
    assert model(torch.randint(0, 128, (1, 4))).logits.shape == (1, 4, 128)
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        find_routers(model)
