"""The adapter base's model helpers: the text config and the decoder layers."""

from __future__ import annotations

import pytest
from torch import nn

from vsraq_modifier.routers.base import decoder_layers, text_config
from vsraq_modifier.testing import tiny_model


def test_text_config_and_decoder_layers() -> None:
    model = tiny_model("qwen3_moe", num_hidden_layers=2)
    assert text_config(model.config) is model.config.get_text_config()
    assert list(decoder_layers(model)) == list(model.model.layers)
    hybrid = tiny_model("nemotron_h")
    assert len(decoder_layers(hybrid)) == hybrid.config.num_hidden_layers
    with pytest.raises(Exception):
        decoder_layers(nn.Linear(2, 2))
