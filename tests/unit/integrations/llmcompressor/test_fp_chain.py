"""The full-precision chain refuses what it cannot substitute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vsraq_modifier.integrations.llmcompressor.fp_chain import FullPrecisionChain


def test_substitutes_the_previous_layers_outputs_and_refuses_mismatches() -> None:
    layers = [nn.Identity(), nn.Identity()]
    chain = FullPrecisionChain()
    chain._layer, chain._outputs = layers[0], [torch.ones(1, 3, 4)]
    calls = [((torch.zeros(1, 3, 4),), {})]
    ((args, _),) = chain._substitute(layers, layers[1], calls)
    assert torch.equal(args[0], torch.ones(1, 3, 4))
    with pytest.raises(RuntimeError, match="received 2 calibration batches"):
        chain._substitute(layers, layers[1], calls * 2)
    with pytest.raises(RuntimeError, match="does not match"):
        chain._substitute(layers, layers[1], [((torch.zeros(1, 2, 4),), {})])
