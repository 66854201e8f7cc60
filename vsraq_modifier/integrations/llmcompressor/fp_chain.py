"""The full-precision activation chain between decoder layers.

AutoRound's objective compares the layer being tuned (run on the quantized
chain) with its full-precision reference (run on the full-precision chain).
llm-compressor's sequential pipeline feeds each layer the outputs of the previous
one; it keeps them full precision (``propagate_error=False``) only when
``type(modifier).__name__ == "AutoRoundModifier"`` (pipelines/sequential/
pipeline.py). Any subclass, ``VSRAQModifier`` included, gets the outputs of the
already-quantized layers instead, so its reference router logits would come from
a quantized model. The pipeline's flag cannot be reached from a modifier, so the
modifier keeps the chain itself: before a layer is tuned, its captured input
hidden states are replaced by the full-precision outputs of the previous layer,
and its own full-precision outputs are computed for the next one (one forward
per layer, before tuning). With ``propagate_error=False`` this changes nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from loguru import logger
from torch import nn
from torch.utils._pytree import tree_map

from vsraq_modifier.masks import restore_causal_masks

__all__ = ["FullPrecisionChain", "Captured"]

#: one captured call of a decoder layer: (args, kwargs)
Captured = tuple[tuple, dict]


def _hidden(call: Captured) -> torch.Tensor:
    args, kwargs = call
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(call: Captured, hidden: torch.Tensor) -> Captured:
    args, kwargs = call
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _to(value: Any, device: torch.device) -> Any:
    return tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, value)


class FullPrecisionChain:
    """Full-precision hidden states flowing from one decoder layer to the next."""

    def __init__(self) -> None:
        self._layer: nn.Module | None = None  # the layer whose outputs are held
        self._outputs: list[torch.Tensor] = []

    def reset(self) -> None:
        self._layer, self._outputs = None, []

    def feed(
        self,
        layers: list[nn.Module],
        layer: nn.Module,
        calls: list[Captured],
        config: Any,
    ) -> list[Captured]:
        """``calls`` with the causal masks the pipeline lost put back
        (:mod:`vsraq_modifier.masks`) and their hidden states replaced by the
        chain's, when the chain holds the outputs of the layer just before
        ``layer`` in ``layers``;
        then computes ``layer``'s full-precision outputs for the next layer."""
        index = next((i for i, m in enumerate(layers) if m is layer), None)
        if index is not None:
            calls = restore_causal_masks(config, index, calls)
        calls = self._substitute(layers, layer, calls)
        self._outputs = self._forward(layer, calls)
        self._layer = layer
        return calls

    def _substitute(
        self, layers: list[nn.Module], layer: nn.Module, calls: list[Captured]
    ) -> list[Captured]:
        index = next((i for i, m in enumerate(layers) if m is layer), None)
        previous = layers[index - 1] if index else None
        if previous is None or self._layer is not previous:
            if index:
                logger.warning(
                    f"vsraq: no full-precision outputs of decoder layer {index - 1}; "
                    f"layer {index} is tuned on the pipeline's inputs (quantized chain)"
                )
            return calls
        if len(calls) != len(self._outputs):
            raise RuntimeError(
                f"vsraq: decoder layer {index} received {len(calls)} calibration "
                f"batches but layer {index - 1} produced {len(self._outputs)}; a "
                "forward outside the sequential pipeline reached this layer"
            )
        out = []
        for call, fp in zip(calls, self._outputs):
            hidden = _hidden(call)
            if hidden.shape != fp.shape:
                raise RuntimeError(
                    f"vsraq: decoder layer {index} input {tuple(hidden.shape)} does "
                    f"not match layer {index - 1}'s output {tuple(fp.shape)}; this "
                    "model has operations between decoder layers, which the "
                    "full-precision chain does not support"
                )
            out.append(_with_hidden(call, fp.to(hidden.dtype)))
        return out

    @torch.no_grad()
    def _forward(self, layer: nn.Module, calls: list[Captured]) -> list[torch.Tensor]:
        from compressed_tensors.offload import get_execution_device
        from compressed_tensors.utils import align_module_device
        from llmcompressor.modifiers.utils.hooks import HooksMixin

        device = get_execution_device(layer)
        outputs = []
        with align_module_device(layer), HooksMixin.disable_hooks():
            for args, kwargs in calls:
                out = layer(*_to(args, device), **_to(kwargs, device))
                hidden = out[0] if isinstance(out, (tuple, list)) else out
                outputs.append(hidden.detach().cpu())
        return outputs
