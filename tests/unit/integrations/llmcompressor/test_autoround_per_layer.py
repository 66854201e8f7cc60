"""The per-layer quantizer's config keeps one reference to llm-compressor's full
model (AutoRound copies configs), and its quantizer is registered."""

from __future__ import annotations

import copy

from vsraq_modifier.integrations.autoround import seams
from vsraq_modifier.integrations.llmcompressor.autoround_per_layer import (
    HostModel,
    LLMCompressorVSRAQQuantizer,
    LLMCompressorVSRAQSignRoundConfig,
)
from vsraq_modifier.testing import tiny_model


def test_copies_share_the_host_model_and_the_quantizer_is_registered() -> None:
    model = tiny_model("qwen3_moe", num_hidden_layers=1)
    config = LLMCompressorVSRAQSignRoundConfig(host_model=model, iters=2)
    for clone in (copy.copy(config), copy.deepcopy(config)):
        assert clone.host.model is model
    assert isinstance(config.host, HostModel)
    assert seams.quantizer_for(config) is LLMCompressorVSRAQQuantizer
