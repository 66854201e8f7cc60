"""Causal masks put back where llm-compressor's traced pipeline passes None to an
eager layer, by layer type (full, sliding window, none for Mamba / MoE layers)."""

from __future__ import annotations

import torch

from vsraq_modifier.masks import (
    layer_attention_kind,
    lookahead_kwargs,
    restore_causal_masks,
)
from vsraq_modifier.testing import tiny_config

T = 20  # longer than gpt-oss's tiny sliding window (16)


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    """[T, T] True where a query position may attend to a key position."""
    m = mask[0, 0] if mask.ndim == 4 else mask[0]
    return m if m.dtype == torch.bool else m == 0


def _config(family: str, attn: str = "eager"):
    return tiny_config(family, attn_implementation=attn)


def _call() -> tuple[tuple, dict]:
    hidden = torch.zeros(1, T, 64)
    return (hidden,), {"attention_mask": None, "position_ids": torch.arange(T)[None]}


def test_layer_kinds() -> None:
    gpt = _config("gpt_oss")
    assert [layer_attention_kind(gpt, i) for i in (0, 1)] == [
        "sliding_attention",
        "full_attention",
    ]
    assert layer_attention_kind(_config("qwen3_moe"), 2) == "full_attention"
    assert layer_attention_kind(_config("nemotron_h"), 0) == "linear_attention"


def test_full_and_sliding_masks_are_causal() -> None:
    gpt = _config("gpt_oss")
    full = _allowed(restore_causal_masks(gpt, 1, [_call()])[0][1]["attention_mask"])
    sliding = _allowed(restore_causal_masks(gpt, 0, [_call()])[0][1]["attention_mask"])
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    assert torch.equal(full, causal)
    assert not sliding[T - 1, 0] and sliding[T - 1, T - 1] and not sliding[0, 1]
    assert torch.equal(sliding & ~causal, torch.zeros_like(causal))


def test_left_alone_where_none_is_right() -> None:
    args, kwargs = _call()
    sdpa = restore_causal_masks(_config("qwen3_moe", "sdpa"), 0, [(args, kwargs)])
    assert sdpa[0][1]["attention_mask"] is None  # sdpa treats None as causal
    given = torch.zeros(1, 1, T, T)
    calls = [(args, {**kwargs, "attention_mask": given})]
    kept = restore_causal_masks(_config("qwen3_moe"), 0, calls)
    assert kept[0][1]["attention_mask"] is given
    mamba = restore_causal_masks(_config("nemotron_h"), 0, [(args, kwargs)])
    assert mamba[0][1]["attention_mask"] is None


def test_lookahead_layers_of_another_type_get_their_own_mask() -> None:
    gpt = _config("gpt_oss")
    kwargs_for = lookahead_kwargs(gpt, tuned_index=0)  # sliding layer tuned
    args, kwargs = _call()
    sliding_mask = restore_causal_masks(gpt, 0, [(args, kwargs)])[0][1]
    same = kwargs_for(0, sliding_mask, args[0])
    assert same is sliding_mask
    other = kwargs_for(1, sliding_mask, args[0])
    assert _allowed(other["attention_mask"])[T - 1, 0]  # full attention
    assert kwargs_for(1, {"position_ids": None}, args[0]) == {"position_ids": None}
