"""Tiny random models of each supported MoE family, built from configs in code.

For tests and plumbing checks only (no hub, a few hundred KB each): their routers are
random, so they show that code runs and computes the right thing, not how well a
method routes. ``tiny_model(family)`` is deterministic given ``seed``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from transformers import PreTrainedModel

__all__ = ["TINY_FAMILIES", "tiny_config", "tiny_model"]


def _qwen3_moe(**kw: Any) -> Any:
    from transformers import Qwen3MoeConfig

    base = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    base.update(kw)
    return Qwen3MoeConfig(**base)


#: family -> config factory (keyword overrides allowed)
TINY_FAMILIES: dict[str, Callable[..., Any]] = {
    "qwen3_moe": _qwen3_moe,
}


def tiny_config(family: str, **overrides: Any) -> Any:
    """A tiny config of ``family`` (see TINY_FAMILIES), with overrides applied."""
    if family not in TINY_FAMILIES:
        raise KeyError(f"no tiny config for {family!r}; known: {sorted(TINY_FAMILIES)}")
    return TINY_FAMILIES[family](**overrides)


def tiny_model(
    family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any
) -> PreTrainedModel:
    """A randomly initialised tiny causal LM of ``family`` in eval mode."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()
