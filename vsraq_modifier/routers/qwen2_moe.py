"""Qwen2-MoE: ``mlp.gate``, softmax in float32, top-k, optional renormalisation,
weights cast back to the logits' dtype (the Qwen3-MoE rule).

The block also has a ``shared_expert`` scaled by ``sigmoid(shared_expert_gate(h))``;
that gate is a per-token scalar, not an expert choice, so it is not a router here.
Dense layers (``mlp_only_layers``, ``decoder_sparse_step``) hold a plain MLP
without ``gate`` and are skipped.
"""

from __future__ import annotations

from vsraq_modifier.routers.qwen3_moe import Qwen3MoeAdapter
from vsraq_modifier.routers.registry import register_adapter

__all__ = ["Qwen2MoeAdapter"]


@register_adapter
class Qwen2MoeAdapter(Qwen3MoeAdapter):
    """Same routing rule as Qwen3-MoE (softmax, top-k, ``norm_topk_prob``)."""

    family = "qwen2_moe"
    model_types = ("qwen2_moe",)
