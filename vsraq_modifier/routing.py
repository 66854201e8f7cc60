"""What a router decides, computed from its logits (pure torch, no host import).

Every supported family reduces to one :class:`RouterSpec`: how logits become
selection scores (what is ranked), how the top-k set is chosen (optionally
group-limited), and how routing weights are formed. The router adapters only build
specs; the objective and the metrics only consume them. :func:`route` reproduces the
model's own computation op for op (same dtypes), so its indices and weights equal the
model's, ties included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "RouterSpec",
    "Routing",
    "route",
    "base_scores",
    "selection_scores",
    "group_scores",
    "group_mask",
    "dense_weights",
    "set_jaccard",
]

ScoreFn = Literal["softmax", "sigmoid", "logits"]
WeightFn = Literal["scores", "softmax_selected"]


@dataclass(frozen=True)
class RouterSpec:
    """How one router turns logits [T, E] into a top-k decision.

    - ``score_fn``: softmax (Qwen, Mixtral, OLMoE), sigmoid (DeepSeek-V3 family),
      or the logits themselves (gpt-oss).
    - ``bias``: correction bias added to the scores for *selection only*
      (DeepSeek-V3 ``e_score_correction_bias``); weights use the unbiased scores.
    - ``n_group``/``topk_group``: group-limited selection; a group's score is the
      sum of its two best (biased) scores, and only experts of the ``topk_group``
      best groups can be chosen.
    - ``weight_fn``: weights are the selected scores (``scores``) or a softmax over
      the selected logits (``softmax_selected``, gpt-oss).
    - ``normalize``: renormalise the selected weights to sum to 1; ``norm_eps`` is
      added to the denominator where the model does so.
    - ``scaling``: routed_scaling_factor applied to the weights.
    - ``score_dtype``: dtype the scores are computed in ("float32" or "input").
    - ``weight_dtype``: dtype of the returned weights ("input", "float32").
    - ``sorted_topk``: the model's top-k returns its experts best first; False
      where it calls ``torch.topk(sorted=False)`` (DeepSeek-V3 family; group-limited
      selection is always unsorted). Only the order of ``indices`` depends on it.
    """

    num_experts: int
    top_k: int
    score_fn: ScoreFn = "softmax"
    weight_fn: WeightFn = "scores"
    normalize: bool = False
    norm_eps: float = 0.0
    scaling: float = 1.0
    bias: torch.Tensor | None = field(default=None, compare=False)
    n_group: int = 1
    topk_group: int = 1
    score_dtype: Literal["float32", "input"] = "float32"
    weight_dtype: Literal["input", "float32"] = "input"
    logits_dtype: Literal["float32", "input"] = "input"
    sorted_topk: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.top_k <= self.num_experts:
            raise ValueError(
                f"top_k={self.top_k} must be in 1..num_experts={self.num_experts}"
            )
        if self.n_group < 1 or self.num_experts % self.n_group:
            raise ValueError(
                f"n_group={self.n_group} must divide num_experts={self.num_experts}"
            )
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"topk_group={self.topk_group} must be in 1..n_group")

    @property
    def group_limited(self) -> bool:
        return self.n_group > 1 and self.topk_group < self.n_group


@dataclass(frozen=True)
class Routing:
    """A router's decision for T tokens: logits and scores [T, E], indices and
    weights [T, k] (weights as the experts' outputs are multiplied by)."""

    logits: torch.Tensor
    scores: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor


def base_scores(logits: torch.Tensor, spec: RouterSpec) -> torch.Tensor:
    """Scores before the selection bias: what the routing weights are taken from."""
    x = logits.float() if spec.score_dtype == "float32" else logits
    if spec.score_fn == "softmax":
        return F.softmax(x, dim=-1)
    if spec.score_fn == "sigmoid":
        return x.sigmoid()
    return x


def selection_scores(logits: torch.Tensor, spec: RouterSpec) -> torch.Tensor:
    """Scores the architecture ranks to pick experts (bias included, no group mask).

    Differentiable in ``logits``.
    """
    s = base_scores(logits, spec)
    if spec.bias is not None:
        s = s + spec.bias.to(device=s.device, dtype=s.dtype)
    return s


def group_scores(scores: torch.Tensor, spec: RouterSpec) -> torch.Tensor:
    """Per-group score [T, G]: sum of the two best selection scores in each group."""
    per_group = scores.view(
        *scores.shape[:-1], spec.n_group, spec.num_experts // spec.n_group
    )
    best = per_group.topk(min(2, per_group.shape[-1]), dim=-1)[0]
    return best.sum(dim=-1)


def group_mask(scores: torch.Tensor, spec: RouterSpec) -> torch.Tensor:
    """Boolean [T, E]: experts that belong to a selected group (all True if the
    router is not group-limited)."""
    if not spec.group_limited:
        return torch.ones_like(scores, dtype=torch.bool)
    g = group_scores(scores, spec)
    idx = torch.topk(g, k=spec.topk_group, dim=-1, sorted=False)[1]
    gmask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    per = spec.num_experts // spec.n_group
    return gmask.unsqueeze(-1).expand(*gmask.shape, per).reshape(scores.shape)


def _weights_of(
    logits: torch.Tensor, base: torch.Tensor, indices: torch.Tensor, spec: RouterSpec
) -> torch.Tensor:
    if spec.weight_fn == "softmax_selected":
        top = logits.gather(-1, indices)
        w = F.softmax(top, dim=-1, dtype=top.dtype)
    else:
        w = base.gather(-1, indices)
    if spec.normalize:
        w = w / (w.sum(dim=-1, keepdim=True) + spec.norm_eps)
    if spec.scaling != 1.0:
        w = w * spec.scaling
    if spec.weight_dtype == "input":
        w = w.to(logits.dtype)
    return w


def route(logits: torch.Tensor, spec: RouterSpec) -> Routing:
    """The model's own routing decision from its router logits [..., E].

    Mirrors the transformers 5.17 router forward passes; see tests/unit/routers.
    """
    if logits.shape[-1] != spec.num_experts:
        raise ValueError(
            f"router logits have {logits.shape[-1]} experts, spec expects "
            f"{spec.num_experts}"
        )
    logits = logits.reshape(-1, spec.num_experts)
    if spec.logits_dtype == "float32":
        logits = logits.float()
    base = base_scores(logits, spec)
    scores = base
    if spec.bias is not None:
        scores = base + spec.bias.to(device=base.device, dtype=base.dtype)
    choice = scores
    if spec.group_limited:
        choice = scores.masked_fill(~group_mask(scores, spec), float("-inf"))
    sorted_ = spec.sorted_topk and not spec.group_limited
    indices = torch.topk(choice, k=spec.top_k, dim=-1, sorted=sorted_)[1]
    weights = _weights_of(logits, base, indices, spec)
    return Routing(logits=logits, scores=scores, indices=indices, weights=weights)


def dense_weights(
    logits: torch.Tensor, indices: torch.Tensor, spec: RouterSpec
) -> torch.Tensor:
    """Routing weights [T, E] for the given selection (zeros elsewhere), as a
    differentiable function of ``logits``; computed in float32 (float64 input stays
    float64, for gradcheck, when ``spec.score_dtype`` is "input")."""
    logits = logits.reshape(-1, spec.num_experts)
    if logits.dtype != torch.float64:
        logits = logits.float()
    base = base_scores(logits, spec)
    w = _weights_of(logits, base, indices, spec).to(logits.dtype)
    return torch.zeros_like(logits).scatter(-1, indices, w)


def set_jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-token Jaccard [T] (float64) of two expert-index sets [T, k] and [T, k'].

    One definition for the re-fit's safeguard, the allocator's sensitivity and the
    benchmark's held-out check; a top-k set holds no expert twice, so the union is
    k + k' - |intersection|.
    """
    b = b.to(a.device)
    inter = (a[:, :, None] == b[:, None, :]).any(-1).sum(-1).double()
    return inter / (a.shape[-1] + b.shape[-1] - inter)
