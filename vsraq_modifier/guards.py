"""Checks that stop a tuning run early and say where, instead of finishing it wrong.

- Calibration data that leaves nothing to tune on: an empty list, samples all
  shorter than ``seqlen`` (AutoRound skips them, then calls ``exit(-1)``), or no
  valid token at all (every position padding or the last of its sample, which
  AutoRound leaves out of its loss): without a check the run "succeeds" as plain
  round-to-nearest with a zero loss.
- Non-finite values while a block is tuned (NaN/inf weights in the checkpoint, a
  diverging step): AutoRound tunes on and writes NaN weights. Here the run stops
  naming the decoder layer and the parameters that hold them.

Pure torch; the integrations call these with what their host hands them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "CalibrationDataError",
    "NonFiniteTuningError",
    "all_finite",
    "check_calibration_samples",
    "check_finite_block",
    "check_finite_loss",
    "check_finite_router_logits",
    "check_valid_tokens",
    "non_finite_parameters",
]


class CalibrationDataError(ValueError):
    """The calibration data leaves no token to tune on."""


class NonFiniteTuningError(FloatingPointError):
    """NaN or inf appeared while a block was tuned; nothing is saved."""


def all_finite(t: torch.Tensor) -> bool:
    """True when no entry of ``t`` is NaN or inf. A sum is finite only if every
    entry is (NaN and inf propagate), and one reduction costs a twentieth of
    ``isfinite(t).all()`` on a [T, H] tensor (measured on a CPU core); a finite
    tensor whose sum overflows falls through to the exact check."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _ids(sample: Any) -> torch.Tensor | None:
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(sample, Mapping):
        ids = sample.get("input_ids")
        return ids if isinstance(ids, torch.Tensor) else None
    if isinstance(sample, (list, tuple)) and sample:
        return sample[0] if isinstance(sample[0], torch.Tensor) else None
    return None


def check_calibration_samples(dataset: Any, seqlen: int | None) -> None:
    """Refuse an in-memory dataset (a list or tuple of token-id tensors or dicts)
    that is empty or whose samples are all shorter than ``seqlen``. Dataset names
    and other iterables are the host's to read; they pass unchecked."""
    if not isinstance(dataset, (list, tuple)):
        return
    if not dataset:
        raise CalibrationDataError(
            "the calibration dataset is empty; pass token-id samples (e.g. "
            "dataset=[ids[None] for ids in ...]) or a dataset name"
        )
    lengths = [ids.shape[-1] for ids in map(_ids, dataset) if ids is not None]
    if seqlen and lengths and len(lengths) == len(dataset) and max(lengths) < seqlen:
        raise CalibrationDataError(
            f"every calibration sample is shorter than seqlen={seqlen} (longest: "
            f"{max(lengths)} tokens), and the host skips such samples; lower "
            f"seqlen to {max(lengths)} or pass longer samples"
        )


def check_valid_tokens(masks: Sequence[torch.Tensor] | None, layer: int) -> None:
    """Refuse calibration data whose valid-token masks (1 = the token counts) are
    all zero. ``None`` means every token is valid."""
    if masks is None:
        return
    valid = sum(int(m.sum()) for m in masks)
    if valid == 0:
        raise CalibrationDataError(
            f"vsraq layer {layer}: no calibration token counts in the loss: every "
            f"position of the {len(masks)} samples is padding (the tokenizer's "
            "pad_token_id) or the last of its sample (no next token). Pass samples "
            "of real text, at least 2 tokens long"
        )


#: a host's parameter name -> the model's (a host may wrap modules for tuning)
Rename = Callable[[str], str]


def non_finite_parameters(
    module: nn.Module, shown: int = 5, rename: Rename | None = None
) -> list[str]:
    """Names of the floating-point parameters/buffers of ``module`` holding NaN or
    inf (at most ``shown`` names, then a count), through ``rename``."""
    bad = [
        rename(name) if rename else name
        for name, t in (*module.named_parameters(), *module.named_buffers())
        if t.is_floating_point() and t.numel() and not t.is_meta and not all_finite(t)
    ]
    if len(bad) > shown:
        return bad[:shown] + [f"... {len(bad) - shown} more"]
    return bad


def _where(
    block: nn.Module,
    layer: int,
    others: Mapping[int, nn.Module] | None = None,
    rename: Rename | None = None,
) -> str:
    """Which parameters hold NaN/inf: the block's (decoder layer ``layer``), else
    those of ``others`` (decoder index -> layer, e.g. the look-ahead path)."""
    for index, module in {layer: block, **(others or {})}.items():
        bad = non_finite_parameters(module, rename=rename)
        if bad:
            return f"NaN/inf in parameters {', '.join(bad)} of decoder layer {index}"
    return (
        f"the parameters of decoder layer {layer} are finite: its inputs "
        "(the previous layers' outputs) or a tuning step (learning rate) produced them"
    )


def check_finite_loss(
    loss: torch.Tensor,
    block: nn.Module,
    layer: int,
    rename: Rename | None = None,
    what: str = "block loss",
) -> None:
    """Stop when a loss is NaN/inf, naming where it comes from: the host's block
    loss (``what="block loss"``), or the total the optimiser sees (host plus
    routing terms: an inf there with a finite host loss means the routing weights
    are too large for float32)."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    if what == "block loss":
        cause, fix = (
            _where(block, layer, rename=rename),
            (
                "Check the checkpoint's weights (torch.isfinite), or lower the "
                "learning rate (lr)."
            ),
        )
    else:
        cause = "the host's block loss is finite: the routing terms overflowed"
        fix = (
            "Lower value_weight / structure_weight (--vsraq_value_weight, "
            "--vsraq_structure_weight)."
        )
    raise NonFiniteTuningError(
        f"vsraq layer {layer}: the {what} is {float(loss.detach())} ({cause}). "
        f"Stopped before writing NaN weights. {fix}"
    )


def check_finite_router_logits(
    logits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    block: nn.Module,
    layer: int,
    others: Mapping[int, nn.Module] | None = None,
    rename: Rename | None = None,
) -> None:
    """``logits``: router label -> (quantized, reference) logits of one step;
    ``others``: further decoder layers the logits went through (look-ahead)."""
    for label, (z, ref) in logits.items():
        for what, t in (("quantized block's", z), ("full-precision reference's", ref)):
            t = t.detach()
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise NonFiniteTuningError(
                    f"vsraq layer {layer}: router {label}: the {what} logits hold "
                    f"{bad} NaN/inf values of {t.numel()} "
                    f"({_where(block, layer, others, rename)}). "
                    "Stopped before writing NaN weights. Check the checkpoint's "
                    "weights (torch.isfinite), or lower the learning rate (lr)."
                )


def check_finite_block(
    block: nn.Module, layer: int, rename: Rename | None = None
) -> None:
    """After tuning: refuse to hand on a block whose weights are not finite."""
    bad = non_finite_parameters(block, rename=rename)
    if bad:
        raise NonFiniteTuningError(
            f"vsraq layer {layer}: after tuning, parameters {', '.join(bad)} hold "
            "NaN/inf; stopped before they are saved. Lower the learning rate (lr) "
            "or check the block's inputs."
        )
