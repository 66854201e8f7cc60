"""Early checks of a ``VSRAQModifier`` run (called from the modifier).

:func:`check_calibration_data`, when the modifier is initialised: an empty
calibration set (``oneshot`` itself fails later with a bare ``StopIteration``), or
one whose every position is padding (``attention_mask`` all 0: the host tunes on
it as if it were text, and the run "succeeds").

llm-compressor hands AutoRound one decoder layer at a time, with that layer's
captured calibration calls; AutoRound's own calibration settings there are
placeholders (128 x 2048). The memory the routing objective needs is therefore
estimated from the first decoder layer's captured calls, before it is tuned:
logged, and refused over the limit (:mod:`vsraq_modifier.memory`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.guards import CalibrationDataError
from vsraq_modifier.inputs import check_dataset_token_ids
from vsraq_modifier.memory import RoutingMemory
from vsraq_modifier.routers.base import decoder_layers
from vsraq_modifier.session import ModelRouting

__all__ = ["check_calibration_data", "check_first_layer", "check_token_ids"]


def _hidden(call: tuple[tuple, dict]) -> torch.Tensor | None:
    args, kwargs = call
    hidden = args[0] if args else kwargs.get("hidden_states")
    return hidden if isinstance(hidden, torch.Tensor) else None


def check_first_layer(
    model: nn.Module,
    layer: nn.Module,
    calls: list[tuple[tuple, dict]] | None,
    *,
    vsraq: VSRAQConfig,
    batch_size: int,
) -> RoutingMemory | None:
    """Memory estimate and check, when ``layer`` is the model's first decoder
    layer and has captured ``calls`` ((args, kwargs) per calibration batch)."""
    layers = list(decoder_layers(model))
    if not calls or not layers or layer is not layers[0]:
        return None
    routing = ModelRouting(model, vsraq)  # loss=mse without routers: no sites
    hiddens = [h for h in map(_hidden, calls) if h is not None and h.dim() >= 2]
    if not hiddens:
        return None
    tokens = sum(int(h.shape[0]) * int(h.shape[1]) for h in hiddens)
    per_call = max(int(h.shape[0]) * int(h.shape[1]) for h in hiddens)
    param = next(layer.parameters(), None)
    device = param.device if param is not None else "cpu"
    dtype = param.dtype if param is not None else torch.float32
    if str(device) == "meta":  # offloaded: the execution device holds the caches
        from compressed_tensors.offload import get_execution_device

        device = get_execution_device(layer)
    return routing.guard_memory(
        device=device,
        tokens=tokens,
        batch_tokens=min(batch_size, len(hiddens)) * per_call,
        activation_bytes=torch.empty((), dtype=dtype).element_size(),
    )


def check_calibration_data(calib: Any) -> None:
    """Refuse an empty calibration dataloader, or one whose batches hold no
    attended position (``attention_mask`` all 0). Anything without ``len`` or
    attention masks passes unchecked."""
    try:
        batches = len(calib)
    except TypeError:
        return
    if batches == 0:
        raise CalibrationDataError(
            "the calibration dataset is empty (0 batches); pass oneshot a dataset "
            "with samples and num_calibration_samples >= 1"
        )
    attended, masks = 0, 0
    for batch in calib:
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        if not isinstance(mask, torch.Tensor):
            return
        masks += 1
        attended += int(mask.sum())
        if attended:
            return
    if masks:
        raise CalibrationDataError(
            f"every position of the {masks} calibration batches is padding "
            "(attention_mask all 0): there is no text to calibrate or tune on. "
            "Pass samples of real text"
        )


def check_token_ids(calib: Any, vocab_size: int | None) -> None:
    """Refuse calibration batches holding a token id outside the model's
    vocabulary (llm-compressor fails in its traced first forward otherwise)."""
    try:
        len(calib)
    except TypeError:
        return
    for batch in calib:
        ids = batch.get("input_ids") if isinstance(batch, dict) else None
        if isinstance(ids, torch.Tensor):
            check_dataset_token_ids([ids.reshape(-1, ids.shape[-1])], vocab_size)
