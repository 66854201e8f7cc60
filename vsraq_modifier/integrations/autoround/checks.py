"""Early checks of a VSRAQ AutoRound run (called from ``VSRAQQuantizer``).

- :func:`check_run`, once the routers are found (``bind``, before calibration):
  calibration data that leaves nothing to tune on, and the memory the routing
  objective will need (logged; refused over the limit, :mod:`vsraq_modifier.memory`).
- :func:`check_tokens`, before a block is tuned: calibration tokens that all drop
  out of AutoRound's loss (padding, or the last position of every sample).
- :func:`check_step`, on each tuning step: NaN/inf in AutoRound's block loss or in
  the router logits, stopping with the decoder layer and parameters named.
"""

from __future__ import annotations

from typing import Any

import torch

from vsraq_modifier.guards import (
    check_calibration_samples,
    check_finite_loss,
    check_finite_router_logits,
    check_valid_tokens,
)
from vsraq_modifier.memory import RoutingMemory, guard_routing_memory
from vsraq_modifier.routers.base import text_config

__all__ = ["check_run", "check_step", "check_tokens"]


def _device(quantizer: Any) -> Any:
    try:
        from auto_round.utils.device_manager import device_manager

        return device_manager.device
    except Exception:  # noqa: BLE001 - unknown device: CPU memory is checked
        return "cpu"


def _activation_bytes(quantizer: Any) -> int:
    ctx = quantizer.model_context
    dtype = getattr(ctx, "amp_dtype", None) if getattr(ctx, "amp", False) else None
    if not isinstance(dtype, torch.dtype):
        dtype = next(
            (p.dtype for p in quantizer.model.parameters() if p.is_floating_point()),
            torch.float32,
        )
    return torch.empty((), dtype=dtype).element_size()


def check_run(quantizer: Any) -> RoutingMemory | None:
    """Calibration data and memory checks of a run whose routers are known
    (``quantizer._sites`` / ``_layers``); returns the memory estimate."""
    calib = quantizer.calibration_context
    if calib is None:
        return None
    check_calibration_samples(calib.dataset, calib.seqlen)
    if not quantizer._sites:
        return None
    tokens = int(calib.nsamples) * int(calib.seqlen)
    batch = min(int(calib.batch_size), int(calib.nsamples))
    return guard_routing_memory(
        quantizer._sites,
        device=_device(quantizer),
        num_layers=len(quantizer._layers),
        config=text_config(quantizer.model.config),
        tokens=tokens,
        batch_tokens=batch * int(calib.seqlen),
        lookahead=quantizer.vsraq.lookahead,
        routing_loss=quantizer.vsraq.is_routing_loss,
        activation_bytes=_activation_bytes(quantizer),
    )


def check_tokens(quantizer: Any, input_ids: Any, layer: int) -> None:
    """Refuse a block whose calibration tokens all drop out of the loss."""
    if not input_ids or not isinstance(input_ids, list):
        return
    check_valid_tokens(quantizer._compute_valid_token_mask(input_ids), layer)


def check_step(
    quantizer: Any, host: torch.Tensor, keys: Any = None, pairs: Any = None
) -> None:
    """NaN/inf in this step's block loss, or in the valid tokens' router logits of
    ``pairs`` (``RouterPair`` per record key in ``keys``), stops the run naming
    the decoder layer, the router and the parameters that hold them."""
    run = quantizer._run
    if run is None:
        return
    check_finite_loss(host, run.layer, run.index)
    if pairs is None:
        return
    logits = {}
    for key, pair in zip(keys, pairs):
        label = run.names.get(run.layers[key], str(key))
        mask = None if pair.mask is None else pair.mask.reshape(-1)
        z = pair.logits.reshape(-1, pair.logits.shape[-1])
        ref = pair.ref_logits.reshape(-1, pair.ref_logits.shape[-1])
        logits[label] = (z, ref) if mask is None else (z[mask], ref[mask])
    path = run.path
    ahead = dict(enumerate(path.layers, start=path.first_layer)) if path else {}
    check_finite_router_logits(logits, run.layer, run.index, ahead)
