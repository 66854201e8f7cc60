"""Mixtral: ``mlp.gate``, softmax in float32, top-k, always renormalised; the
weights stay float32 (``MixtralTopKRouter`` does not cast them back).

``router_jitter_noise`` perturbs the block's input in training mode only, before
the router, so logits captured at the router still give the model's decision.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter, text_config
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec

__all__ = ["MixtralAdapter"]


@register_adapter
class MixtralAdapter(RouterAdapter):
    family = "mixtral"
    model_types = ("mixtral",)

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        cfg = text_config(config)
        return RouterSpec(
            num_experts=cfg.num_local_experts,
            top_k=cfg.num_experts_per_tok,
            score_fn="softmax",
            normalize=True,
            weight_dtype="float32",
        )
