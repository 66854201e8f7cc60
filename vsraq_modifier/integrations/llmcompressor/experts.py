"""Two adjustments to llm-compressor's linearized MoE experts while AutoRound
tunes a decoder layer.

1. ``LinearExperts2D`` (llmcompressor/modeling/moe/linear_experts.py) is a
   ``ModuleList`` of experts that also holds the activation function as a child
   (``self.act_fn``). AutoRound iterates the experts of an MoE block to fill in
   missing activation maxima (``auto_round.utils.set_amax_for_all_moe_layers``,
   called for NVFP4 and any static activation scheme); for the activation child
   it gets ``None`` and crashes with "'NoneType' object has no attribute
   'act_max'". :func:`experts_without_activation_child` takes the activation out
   of the module tree for the duration (it stays reachable as an attribute; the
   experts' forward does not use it, each expert holds its own reference).
2. ``oneshot(moe_calibrate_all_experts=True)`` (the default) runs every expert on
   every token and then keeps only the routed tokens' outputs. The block output,
   the routing and every gradient are the same as with routed tokens only, so
   for the tuning loop it is pure cost (E/k times the expert compute per
   iteration). :func:`routed_experts_only` switches it off for the tuning loop;
   calibration statistics (AutoRound's activation maxima) keep the user's setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["experts_without_activation_child", "routed_experts_only"]


def _linear_experts(layer: nn.Module) -> list[nn.Module]:
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D

    return [m for m in layer.modules() if isinstance(m, LinearExperts2D)]


@contextlib.contextmanager
def experts_without_activation_child(layer: nn.Module) -> Iterator[int]:
    """Detach the ``act_fn`` child of every linearized experts list in ``layer``
    (yields how many were detached); restored on exit, in the same position."""
    detached: list[tuple[nn.Module, nn.Module]] = []
    for experts in _linear_experts(layer):
        act = experts._modules.get("act_fn")
        if act is None:
            continue
        del experts._modules["act_fn"]
        object.__setattr__(experts, "act_fn", act)  # plain attribute meanwhile
        detached.append((experts, act))
    try:
        yield len(detached)
    finally:
        for experts, act in detached:
            experts.__dict__.pop("act_fn", None)
            experts._modules["act_fn"] = act


@contextlib.contextmanager
def routed_experts_only() -> Iterator[None]:
    """Run linearized experts on their routed tokens only (llm-compressor's
    ``moe_calibration_context`` in reverse); restores the previous setting."""
    from llmcompressor.modeling.moe import context

    previous = context._CALIBRATE_ALL_EXPERTS
    context._CALIBRATE_ALL_EXPERTS = False
    try:
        yield
    finally:
        context._CALIBRATE_ALL_EXPERTS = previous
