"""A convex, structure-aware refinement of a router re-fit (pure torch).

The ridge fit (:mod:`vsraq_modifier.refit`) matches every logit; what routing
depends on is only the order at the top-k boundary. Started from the ridge
solution ``theta_r``, this minimises over the router parameters ``theta``

    mean_t  h_t(theta)^2 + rho * ||(theta - theta_r) x_t||^2 / E,
    h_t = max(0, m_t - (min_{i in S*_t} z_ti - max_{j not in S*_t} z_tj)),

with ``S*_t`` the reference's top-k set, ``z = theta x`` and the target margin
``m_t = min(m*_t, median m*)`` (the reference's own logit margin, capped so that
tokens far from the boundary ask for nothing more). ``min`` of linear functions
is concave and ``max`` convex, so ``h_t`` is convex and so is the objective; a
few L-BFGS iterations solve it. Only for routers that rank the logits themselves
or a monotone function of them without a bias (softmax, gpt-oss); not group-limited.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vsraq_modifier.routing import RouterSpec, route

__all__ = ["margin_refine", "supports_refine"]


def supports_refine(spec: RouterSpec) -> bool:
    """The refinement's margins are those the router ranks by."""
    return (
        spec.score_fn in ("softmax", "logits")
        and spec.bias is None
        and not (spec.group_limited)
    )


def margin_refine(
    x: Tensor, ref: Tensor, theta: Tensor, spec: RouterSpec, iters: int, rho: float
) -> Tensor:
    """``iters`` L-BFGS iterations of the objective above from ``theta`` [E, P]
    (``x`` [T, P] float64 with the bias column if any, ``ref`` [T, E])."""
    if not supports_refine(spec):
        raise ValueError(
            "the margin refinement needs a softmax or logits router "
            "without selection bias or groups"
        )
    e = spec.num_experts
    chosen = torch.zeros(ref.shape, dtype=torch.bool, device=ref.device)
    chosen.scatter_(-1, route(ref.float(), spec).indices, True)
    if spec.top_k == e:
        return theta
    neg = torch.finfo(ref.dtype).max

    def margin(z: Tensor) -> Tensor:
        return z.masked_fill(~chosen, neg).amin(-1) - z.masked_fill(chosen, -neg).amax(
            -1
        )

    m_ref = margin(ref).clamp_min(0)
    target = m_ref.clamp_max(m_ref.median())
    start = theta.detach().clone()
    param = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([param], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        z = x @ param.T
        h = (target - margin(z)).clamp_min(0)
        drift = ((x @ (param - start).T) ** 2).sum(-1) / e
        loss = (h * h + rho * drift).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return param.detach()
