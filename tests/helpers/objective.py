"""Router specs and small helpers shared by the objective tests."""

from __future__ import annotations

import torch

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.objective import (
    RouterPair,
    prepare,
    sensitivity_margin,
    sensitivity_weights,
)
from vsraq_modifier.routing import RouterSpec


def softmax_spec(e: int = 8, k: int = 2, normalize: bool = True) -> RouterSpec:
    """Qwen / Mixtral / OLMoE style."""
    return RouterSpec(num_experts=e, top_k=k, normalize=normalize)


def grouped_spec(e: int = 8, k: int = 2, seed: int = 0) -> RouterSpec:
    """DeepSeek-V3 style: sigmoid + correction bias, 4 groups of which 2 are kept."""
    g = torch.Generator().manual_seed(seed)
    bias = 0.1 * torch.randn(e, generator=g)
    return RouterSpec(
        num_experts=e,
        top_k=k,
        score_fn="sigmoid",
        bias=bias,
        n_group=4,
        topk_group=2,
        normalize=True,
        norm_eps=1e-20,
        scaling=2.5,
    )


def gptoss_spec(e: int = 8, k: int = 2) -> RouterSpec:
    """gpt-oss style: rank the logits, softmax over the selected ones."""
    return RouterSpec(
        num_experts=e, top_k=k, score_fn="logits", weight_fn="softmax_selected"
    )


def logits_spec(e: int, k: int, **kw) -> RouterSpec:
    """Scores = logits, weights = selected logits: hand-computable."""
    return RouterSpec(num_experts=e, top_k=k, score_fn="logits", **kw)


SPECS = {"softmax": softmax_spec, "grouped": grouped_spec, "gptoss": gptoss_spec}

ALL_CONFIGS = [
    VSRAQConfig(value_target="both"),
    VSRAQConfig(value_target="logits"),
    VSRAQConfig(value_target="scores"),
    VSRAQConfig(structure="set_nll"),
    VSRAQConfig(loss="topk_mse"),
    VSRAQConfig(loss="router_kl"),
]


def prep_of(z, ref, spec, mask=None):
    prep = prepare(RouterPair(z, ref, spec, mask=mask))
    assert prep is not None
    return prep


def weights_of(prep, temperature=None):
    return sensitivity_weights(sensitivity_margin(prep), temperature)
