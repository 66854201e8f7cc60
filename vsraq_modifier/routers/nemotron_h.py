"""Nemotron-H (Nemotron 3): a hybrid whose decoder layers (``NemotronHBlock``) hold
one ``mixer`` each: Mamba-2, attention, dense MLP or MoE. The MoE mixer's ``gate``
(``NemotronHTopkRouter``) is the DeepSeek-V3 router op for op (float32 sigmoid,
correction bias, group-limited unsorted top-k, ``+ 1e-20`` renormalisation,
``routed_scaling_factor``). The router is found by its class, so the other mixer
kinds are skipped whatever attributes they carry.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter
from vsraq_modifier.routers.deepseek_v3 import sigmoid_group_spec
from vsraq_modifier.routers.registry import register_adapter
from vsraq_modifier.routing import RouterSpec

__all__ = ["NemotronHAdapter"]


@register_adapter
class NemotronHAdapter(RouterAdapter):
    family = "nemotron_h"
    model_types = ("nemotron_h",)
    block_attrs = ("mixer",)
    router_classes = ("NemotronHTopkRouter",)

    def is_router(self, module: nn.Module) -> bool:
        return type(module).__name__ in self.router_classes

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        return sigmoid_group_spec(config, router, block)
