"""Qwen2-MoE: ``mlp.gate``, softmax in float32, top-k, optional renormalisation,
weights cast back to the logits' dtype (the Qwen3-MoE rule).

The block also has a ``shared_expert`` scaled by ``sigmoid(shared_expert_gate(h))``;
that gate is a per-token scalar, not an expert choice, so it is not a router here.
Dense layers (``mlp_only_layers``, ``decoder_sparse_step``) hold a plain MLP
without ``gate`` and are skipped.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter, text_config
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec

__all__ = ["Qwen2MoeAdapter"]


@register_adapter
class Qwen2MoeAdapter(RouterAdapter):
    family = "qwen2_moe"
    model_types = ("qwen2_moe",)

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        cfg = text_config(config)
        return RouterSpec(
            num_experts=cfg.num_experts,
            top_k=cfg.num_experts_per_tok,
            score_fn="softmax",
            normalize=bool(cfg.norm_topk_prob),
        )
