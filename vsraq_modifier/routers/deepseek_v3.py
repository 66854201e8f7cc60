"""DeepSeek-V3: ``mlp.gate`` (``DeepseekV3TopkRouter``) computes float32 logits,
sigmoid scores, adds ``e_score_correction_bias`` for selection only, keeps the
``topk_group`` best of ``n_group`` groups (group score: sum of its two best),
takes an unsorted top-k inside them, renormalises with ``+ 1e-20`` when
``norm_topk_prob`` and multiplies by ``routed_scaling_factor``; weights stay
float32. Layers before ``first_k_dense_replace`` are dense MLPs and are skipped.

AutoRound's ``LinearDeepseekV3MoE`` keeps the stock router (its inline
``route_tokens_to_experts`` only runs when the gate returns bare logits, which
transformers >= 5.13 never does), so the same spec holds.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter, text_config
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec

__all__ = ["DeepseekV3Adapter", "sigmoid_group_spec"]


def sigmoid_group_spec(config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
    """The DeepSeek-V3 routing rule, shared by GLM-4-MoE and Nemotron-H.

    ``bias`` is the router's buffer itself, not a copy; ``model.to()`` replaces
    buffers, so call ``find_routers`` again after moving or casting the model
    (route() casts the bias to the logits' device and dtype either way).
    """
    cfg = text_config(config)
    bias = getattr(router, "e_score_correction_bias", None)
    if bias is None:
        bias = getattr(getattr(block, "gate", None), "e_score_correction_bias", None)
    return RouterSpec(
        num_experts=cfg.n_routed_experts,
        top_k=cfg.num_experts_per_tok,
        score_fn="sigmoid",
        normalize=bool(cfg.norm_topk_prob),
        norm_eps=1e-20,
        scaling=float(cfg.routed_scaling_factor),
        bias=bias,
        n_group=cfg.n_group or 1,
        topk_group=cfg.topk_group or 1,
        score_dtype="float32",
        weight_dtype="float32",
        logits_dtype="float32",
        sorted_topk=False,
    )


@register_adapter
class DeepseekV3Adapter(RouterAdapter):
    family = "deepseek_v3"
    model_types = ("deepseek_v3",)

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        return sigmoid_group_spec(config, router, block)
