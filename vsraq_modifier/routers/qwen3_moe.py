"""Qwen3-MoE: ``mlp.gate``, softmax in float32, top-k, optional renormalisation,
weights cast back to the logits' dtype. Also AutoRound's
``LinearQwen3MoeSparseMoeBlock`` (gate is a plain nn.Linear)."""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter, text_config
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec


@register_adapter
class Qwen3MoeAdapter(RouterAdapter):
    family = "qwen3_moe"
    model_types = ("qwen3_moe",)

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        cfg = text_config(config)
        return RouterSpec(
            num_experts=cfg.num_experts,
            top_k=cfg.num_experts_per_tok,
            score_fn="softmax",
            normalize=bool(cfg.norm_topk_prob),
        )
