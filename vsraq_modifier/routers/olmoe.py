"""OLMoE: ``mlp.gate``, softmax in float32, top-k, renormalised only with
``norm_topk_prob`` (off in the released checkpoints), weights cast back to the
logits' dtype. Every decoder layer is sparse."""

from __future__ import annotations

from vsraq_modifier.routers.qwen3_moe import Qwen3MoeAdapter
from vsraq_modifier.routers.registry import register_adapter

__all__ = ["OlmoeAdapter"]


@register_adapter
class OlmoeAdapter(Qwen3MoeAdapter):
    """Same routing rule as Qwen3-MoE (softmax, top-k, ``norm_topk_prob``)."""

    family = "olmoe"
    model_types = ("olmoe",)
