"""Causal masks that llm-compressor's traced pipeline loses (transformers 5.17).

The sequential pipeline runs every decoder layer with eager attention
(``calibration_forward_context`` patches ``model.config``), but its traced first
subgraph rebuilds the config from a constant, without that patch, and calls
``create_causal_mask`` with it: sdpa's rule then returns ``None`` for an unpadded
batch ("use is_causal"), and eager attention given ``None`` attends to *every*
position, future ones included. The layers' calibration activations are then not
the model's (measured on a tiny Qwen3-MoE: layer 0's output off by 75 % of its
scale). Before a layer is tuned, :func:`restore_causal_masks` puts back the mask
the model itself would build for that layer (full or sliding-window causal),
wherever the captured one is ``None`` and the layer runs eager attention.

The look-ahead runs the next layers with the tuned layer's arguments; where a
layer on the way is of another type (gpt-oss alternates sliding-window and full
attention; Nemotron-H mixes Mamba, attention and MoE layers) it needs its own
mask: :func:`lookahead_kwargs`. Calibration batches are unpadded (``oneshot``'s
default batch size 1), so that mask is the plain causal one of its type.
"""

from __future__ import annotations

from typing import Any

import torch

from vsraq_modifier.transformers_seams import attention_implementation

__all__ = ["layer_attention_kind", "lookahead_kwargs", "restore_causal_masks"]

_EAGER = ("eager",)


def layer_attention_kind(config: Any, index: int) -> str:
    """ "full_attention", "sliding_attention", or another layer type that takes no
    causal mask (Mamba "linear_attention", Nemotron-H "moe")."""
    types = getattr(config, "layer_types", None)
    if types and index < len(types):
        return str(types[index])
    return "full_attention"


def _mask_for(
    config: Any, kind: str, hidden: torch.Tensor, kwargs: dict
) -> torch.Tensor | None:
    from transformers.masking_utils import (
        create_causal_mask,
        create_sliding_window_causal_mask,
    )

    build = {
        "full_attention": create_causal_mask,
        "sliding_attention": create_sliding_window_causal_mask,
    }.get(kind)
    if build is None:
        return None
    position_ids = kwargs.get("position_ids")
    if position_ids is not None:
        position_ids = position_ids.expand(hidden.shape[0], -1)
    return build(
        config=config,
        inputs_embeds=hidden,
        attention_mask=None,
        past_key_values=None,
        position_ids=position_ids,
    )


def restore_causal_masks(
    config: Any, index: int, calls: list[tuple[tuple, dict]]
) -> list[tuple[tuple, dict]]:
    """``calls`` (captured (args, kwargs) of decoder layer ``index``) with the
    causal mask filled in where the pipeline passed ``None``."""
    if attention_implementation(config) not in _EAGER:
        return calls  # sdpa/flash treat None as causal
    kind = layer_attention_kind(config, index)
    out = []
    for args, kwargs in calls:
        if "attention_mask" in kwargs and kwargs["attention_mask"] is None:
            hidden = args[0] if args else kwargs["hidden_states"]
            mask = _mask_for(config, kind, hidden, kwargs)
            if mask is not None:
                kwargs = {**kwargs, "attention_mask": mask}
        out.append((args, kwargs))
    return out


def lookahead_kwargs(config: Any, tuned_index: int) -> Any:
    """A ``LookaheadPath.kwargs_for``: each look-ahead layer whose type differs
    from the tuned layer's gets the mask of its own type."""
    tuned_kind = layer_attention_kind(config, tuned_index)

    def kwargs_for(index: int, kwargs: dict, hidden: torch.Tensor) -> dict:
        kind = layer_attention_kind(config, index)
        if kind == tuned_kind or "attention_mask" not in kwargs:
            return kwargs
        return {**kwargs, "attention_mask": _mask_for(config, kind, hidden, kwargs)}

    return kwargs_for
