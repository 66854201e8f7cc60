"""GLM-4-MoE (GLM-4.5/4.6): ``mlp.gate`` (``Glm4MoeTopkRouter``) is the
DeepSeek-V3 router op for op: float32 sigmoid scores, correction bias, group-limited
unsorted top-k, ``+ 1e-20`` renormalisation, ``routed_scaling_factor``; layers
before ``first_k_dense_replace`` are dense. AutoRound's ``LinearGlm4MoeMoE`` keeps
the stock router."""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter
from vsraq_modifier.routers.deepseek_v3 import sigmoid_group_spec
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec

__all__ = ["Glm4MoeAdapter"]


@register_adapter
class Glm4MoeAdapter(RouterAdapter):
    family = "glm4_moe"
    model_types = ("glm4_moe",)

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        return sigmoid_group_spec(config, router, block)
