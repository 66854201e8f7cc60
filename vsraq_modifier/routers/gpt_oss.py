"""gpt-oss: ``mlp.router`` (``GptOssTopKRouter``) is a linear layer with a bias;
it takes the top-k of the logits themselves (sorted) and the weights are a softmax
over those k logits, in the logits' dtype. ``GptOssMLP.forward`` returns a tuple
``(hidden, router_scores)``; the router itself returns (logits, weights, indices).
AutoRound's ``SequentialGPTOSSMoE`` (transformers < 5) keeps the stock router.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter, text_config
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec

__all__ = ["GptOssAdapter"]


@register_adapter
class GptOssAdapter(RouterAdapter):
    family = "gpt_oss"
    model_types = ("gpt_oss",)
    router_attr = "router"

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        cfg = text_config(config)
        return RouterSpec(
            num_experts=cfg.num_local_experts,
            top_k=cfg.num_experts_per_tok,
            score_fn="logits",
            weight_fn="softmax_selected",
            score_dtype="input",
        )
