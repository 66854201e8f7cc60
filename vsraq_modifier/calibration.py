"""Calibration samples for quantizing, and the validation split carved from them.

The shipped calibration text is cut in two by token position: the first
``CALIBRATION_SHARE`` of its tokens is where calibration windows are drawn from
(``part="calibration"``); the rest is a validation split (``part="validation"``)
for choosing defaults and trying objective changes without touching the held-out
text, which is kept for the reported numbers only.

Windows are whole, non-overlapping ``seqlen``-token slices at multiples of
``seqlen``; which ones is drawn from ``seed``, so two quantization runs with the
same seed see the same samples (and different seeds different ones).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import torch

__all__ = [
    "CALIBRATION_SHARE",
    "Part",
    "calibration_samples",
    "split_tokens",
    "text_token_ids",
]

#: share of the calibration text's tokens that calibration windows come from
CALIBRATION_SHARE = 0.8

Part = Literal["calibration", "validation"]


def text_token_ids(text_path: str | Path, tokenizer_path: str | Path) -> torch.Tensor:
    """Token ids [N] of a UTF-8 text file, no special tokens added."""
    from vsraq_modifier.metrics.loading import load_token_ids

    return load_token_ids(text_path, tokenizer_path)


def split_tokens(ids: torch.Tensor, part: Part) -> torch.Tensor:
    """The calibration (first ``CALIBRATION_SHARE``) or validation (the rest) part."""
    cut = int(ids.numel() * CALIBRATION_SHARE)
    if part == "calibration":
        return ids[:cut]
    if part == "validation":
        return ids[cut:]
    raise ValueError(f"part={part!r}: use 'calibration' or 'validation'")


def calibration_samples(
    ids: torch.Tensor, *, nsamples: int, seqlen: int, seed: int
) -> list[torch.Tensor]:
    """``nsamples`` windows [1, seqlen] of ``ids``, chosen by ``seed``, in the
    order drawn (AutoRound's ``dataset=`` accepts this list)."""
    if nsamples < 1 or seqlen < 2:
        raise ValueError(f"nsamples={nsamples}, seqlen={seqlen}: need >= 1 and >= 2")
    available = ids.numel() // seqlen
    if nsamples > available:
        raise ValueError(
            f"{nsamples} windows of {seqlen} tokens requested, the text has "
            f"{available} ({ids.numel()} tokens); lower --nsamples or --seqlen"
        )
    starts = random.Random(seed).sample(range(available), nsamples)
    return [
        ids[s * seqlen : (s + 1) * seqlen].reshape(1, seqlen).clone() for s in starts
    ]
