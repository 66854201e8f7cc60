"""OLMoE: ``mlp.gate``, softmax in float32, top-k, renormalised only with
``norm_topk_prob`` (off in the released checkpoints), weights cast back to the
logits' dtype. Every decoder layer is sparse."""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter, text_config
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec

__all__ = ["OlmoeAdapter"]


@register_adapter
class OlmoeAdapter(RouterAdapter):
    family = "olmoe"
    model_types = ("olmoe",)

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        cfg = text_config(config)
        return RouterSpec(
            num_experts=cfg.num_experts,
            top_k=cfg.num_experts_per_tok,
            score_fn="softmax",
            normalize=bool(cfg.norm_topk_prob),
        )
