"""The safeguard on each block's SignSGD step: how many of the host's gradient
signs the routing terms may overturn.

AutoRound moves every rounding parameter by ``lr * sign(g)``, ``g = g_host +
g_route``: wherever the routing gradient opposes the host's and is larger, the step
follows the routing terms and raises the block's own reconstruction error. With few
calibration tokens the routing gradient is large and noisy on many parameters at
once (measured: docs/results.md). :func:`flip_cap_scale` finds the largest factor
``s <= 1`` on the routing terms for which at most ``share`` of the parameters the
host's gradient moves get the opposite sign: a parameter with opposing gradients
flips exactly when ``s > |g_host| / |g_route|``, so ``s`` is a quantile of that
ratio, in closed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FlipCap", "flip_cap_scale"]


@dataclass(frozen=True)
class FlipCap:
    """``scale``: the factor on the routing terms (1: no cap needed);
    ``before`` / ``after``: share of the host-moved parameters whose step sign the
    routing terms overturn, at scale 1 and at ``scale``."""

    scale: float
    before: float
    after: float


def _flat(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    parts = [
        (torch.zeros_like(p) if g is None else g).detach().reshape(-1).float()
        for g, p in zip(grads, like)
    ]
    return torch.cat([p.cpu() for p in parts]) if parts else torch.zeros(0)


def flip_cap_scale(
    host_grads: Sequence[Tensor | None],
    route_grads: Sequence[Tensor | None],
    params: Sequence[Tensor],
    share: float,
) -> FlipCap:
    """The routing terms' factor that overturns at most ``share`` of the host's
    step signs (parameters the host's gradient does not move are not counted:
    the routing terms may move them freely)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share={share}: must be in [0, 1]")
    gh, gr = _flat(host_grads, params), _flat(route_grads, params)
    moved = gh != 0
    n = int(moved.sum())
    if n == 0:
        return FlipCap(1.0, 0.0, 0.0)
    opposing = moved & (gh * gr < 0)
    ratio = (gh[opposing].abs() / gr[opposing].abs()).sort().values
    before = float((ratio < 1.0).sum()) / n
    allowed = int(share * n)
    if ratio.numel() <= allowed or before <= share:
        return FlipCap(1.0, before, before)
    # flips at scale s: #{ratio < s} (at s == ratio the step is 0): just below
    # the allowed-th smallest ratio, at most `allowed` parameters flip
    scale = min(1.0, float(ratio[allowed]) * (1.0 - 1e-6))
    after = float((ratio < scale).sum()) / n
    return FlipCap(scale, before, after)
