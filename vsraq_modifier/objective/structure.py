"""Structure alignment (margin variant): keep the reference's decision, on the
quantized model's selection scores c (what the architecture ranks).

- boundary: relu(delta_t - (min_{S*} c - max_{U*} c)), delta_t = min(delta, m*_t);
- group-limited routers decide in two stages, so the boundary has two: the
  selected groups' group scores above the rejected groups', then, within the selected
  groups, the selected experts above the unselected ones. Experts of rejected groups
  take part only through their group's score: never pushed one by one, since they may
  legitimately outscore a selected expert;
- order: consecutive pairs of S* in reference order, relu(min(gap*, delta) - gap),
  only where gap* > 0 (ties have no order to keep).

Every target is capped by the reference's own gap, so all hinges are exactly zero,
with exactly zero gradient (relu's subgradient at 0 is 0), when c == c*.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vsraq_modifier.objective.pair import PreparedPair
from vsraq_modifier.objective.sensitivity import (
    expert_boundary_gap,
    group_boundary_gap,
    weighted_mean,
)

__all__ = ["boundary_per_token", "order_per_token", "structure_term"]


def _hinge(target: Tensor, gap: Tensor) -> Tensor:
    # gap = +inf (nothing to separate) -> 0 with zero gradient; target = min(delta, m*)
    # keeps the raw reference gap (even a tiny negative one from a dtype change) so
    # that the hinge is exactly relu(0) = 0 at the reference
    x = target - gap
    return torch.where(torch.isfinite(gap), torch.relu(x), torch.zeros_like(x))


def boundary_per_token(prep: PreparedPair, delta: float) -> Tensor:
    """Boundary hinge per token [T] (sum of both stages for group-limited routers)."""
    c, c_ref = prep.scores, prep.ref_scores
    m_e = expert_boundary_gap(prep, c_ref)
    out = _hinge(m_e.clamp(max=delta), expert_boundary_gap(prep, c))
    if prep.spec.group_limited:
        m_g = group_boundary_gap(prep, c_ref)
        out = out + _hinge(m_g.clamp(max=delta), group_boundary_gap(prep, c))
    return out


def order_per_token(prep: PreparedPair, delta: float) -> Tensor:
    """Mean over consecutive reference-ordered pairs of S* of the order hinge [T]."""
    k = prep.spec.top_k
    if k < 2:
        return prep.scores.new_zeros(prep.num_tokens)
    c, c_ref = prep.scores, prep.ref_scores
    top_ref = c_ref.gather(-1, prep.ref_indices)
    order = top_ref.argsort(dim=-1, descending=True, stable=True)
    idx = prep.ref_indices.gather(-1, order)
    s_ref, s = c_ref.gather(-1, idx), c.gather(-1, idx)
    gap_ref = s_ref[:, :-1] - s_ref[:, 1:]
    gap = s[:, :-1] - s[:, 1:]
    live = gap_ref > 0
    hinge = torch.relu(gap_ref.clamp(max=delta) - gap) * live
    return hinge.sum(dim=-1) / (k - 1)


def structure_term(
    prep: PreparedPair, weights: Tensor, delta: float, order: bool = True
) -> Tensor:
    """L_structure = mean_t w_t (boundary_t + order_t)."""
    per_token = boundary_per_token(prep, delta)
    if order:
        per_token = per_token + order_per_token(prep, delta)
    return weighted_mean(per_token, weights)
