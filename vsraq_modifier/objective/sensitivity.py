"""Reference margins and the sensitivity weights built from them.

A token whose reference decision has a small margin is one small error away from a
flip; it gets a large weight. Everything here depends on the reference only (no
gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vsraq_modifier.objective.pair import PreparedPair

__all__ = [
    "TAU_FLOOR",
    "TAU_MEAN_FRACTION",
    "boundary_gap",
    "group_boundary_gap",
    "expert_boundary_gap",
    "reference_margins",
    "sensitivity_margin",
    "default_temperature",
    "sensitivity_weights",
    "weighted_mean",
]

#: absolute floor of the default temperature (selection-score units)
TAU_FLOOR = 1e-6
#: the default temperature is at least this fraction of the mean finite margin, so
#: that a batch where most tokens are tied (median 0) does not put all its weight on
#: the tied tokens alone
TAU_MEAN_FRACTION = 0.1


def boundary_gap(scores: Tensor, upper: Tensor, lower: Tensor) -> Tensor:
    """min over ``upper`` minus max over ``lower`` (bool [T, E] masks), per token.

    +inf where ``lower`` is empty (nothing to stay above), -inf where ``upper`` is.
    Masked entries get no gradient.
    """
    inf = torch.finfo(scores.dtype).max
    lo = scores.masked_fill(~upper, inf).amin(dim=-1)
    hi = scores.masked_fill(~lower, -inf).amax(dim=-1)
    gap = lo - hi
    pos = torch.full_like(gap, float("inf"))
    neg = torch.full_like(gap, float("-inf"))
    gap = torch.where(lower.any(dim=-1), gap, pos)
    return torch.where(upper.any(dim=-1), gap, neg)


def group_boundary_gap(prep: PreparedPair, scores: Tensor) -> Tensor:
    """Stage one of a group-limited decision: selected groups' group scores above
    the rejected groups' (inf when the router is not group-limited)."""
    if not prep.spec.group_limited:
        return torch.full(
            scores.shape[:-1], float("inf"), dtype=scores.dtype, device=scores.device
        )
    g = prep.group_scores_of(scores)
    sel = prep.ref_group_selected
    return boundary_gap(g, sel, ~sel)


def expert_boundary_gap(prep: PreparedPair, scores: Tensor) -> Tensor:
    """Stage two (or the only stage): selected experts above the unselected experts
    of the selected groups. Experts of rejected groups are not compared."""
    sel = prep.ref_selected
    return boundary_gap(scores, sel, prep.ref_group_experts & ~sel)


def reference_margins(prep: PreparedPair) -> tuple[Tensor, Tensor]:
    """(expert margin, group margin) of the reference decision, [T] each, raw
    (may be slightly negative under ties computed in another dtype; +inf where a
    stage has nothing to separate)."""
    c = prep.ref_scores
    return expert_boundary_gap(prep, c), group_boundary_gap(prep, c)


def sensitivity_margin(prep: PreparedPair) -> Tensor:
    """m*_t: the smaller of the two stages' margins, clamped at 0 (inf: no boundary)."""
    m_e, m_g = reference_margins(prep)
    return torch.minimum(m_e, m_g).clamp_min(0.0)


def default_temperature(margins: Tensor) -> float:
    """tau = max(median, TAU_MEAN_FRACTION * mean, TAU_FLOOR) over finite margins."""
    finite = margins[torch.isfinite(margins)]
    if finite.numel() == 0:
        return 1.0
    med = float(finite.median())
    mean = float(finite.mean())
    return max(med, TAU_MEAN_FRACTION * mean, TAU_FLOOR)


def sensitivity_weights(margins: Tensor, temperature: float | None = None) -> Tensor:
    """w_t = softmax_t(-m_t / tau), rescaled to mean 1 over the (valid) tokens.

    Tokens without a boundary (m = inf, k == E) get weight 0; if no token has one,
    every token gets weight 1.
    """
    margins = margins.detach()
    finite = torch.isfinite(margins)
    n = margins.numel()
    if not bool(finite.any()):
        return torch.ones_like(margins)
    tau = default_temperature(margins) if temperature is None else float(temperature)
    logits = (-margins / tau).masked_fill(~finite, float("-inf"))
    return torch.softmax(logits, dim=0) * n


def weighted_mean(per_token: Tensor, weights: Tensor) -> Tensor:
    """mean_t w_t x_t over the valid tokens (weights have mean 1)."""
    return (per_token * weights).sum() / per_token.numel()
