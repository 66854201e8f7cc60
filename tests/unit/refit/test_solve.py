"""The re-fit's solve helpers: the target each router family gets, and the
boundary weights."""

from __future__ import annotations

import torch

from vsraq_modifier.refit.solve import boundary_weights, resolved_target
from vsraq_modifier.routers import find_routers
from vsraq_modifier.testing import tiny_model


def test_targets_by_family_and_boundary_weights() -> None:
    softmax = find_routers(tiny_model("qwen3_moe", num_hidden_layers=1))[0].spec
    sigmoid = find_routers(tiny_model("deepseek_v3", num_hidden_layers=2))[0].spec
    assert resolved_target(softmax, "auto") == "centred"
    assert resolved_target(sigmoid, "auto") == "sigmoid"
    z = torch.randn(5, softmax.num_experts)
    w = boundary_weights(z, softmax)
    assert w.shape == z.shape
    assert torch.all((w.sum(-1) > 0) & (w.sum(-1) <= 2 + 1e-6))  # k-th and (k+1)-th
