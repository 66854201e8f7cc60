"""Value alignment: keep the numbers the experts' outputs are mixed with.

Two parts, each a relative squared error (the reference's own mean squared size
divides it, so the two parts are comparable and neither depends on the router's
scale):
- ``scores``: the routing weights over the experts either model selects: each model's
  own weights over its own top-k (zeros elsewhere), what the block really multiplies;
- ``logits``: the logits, centred per token for softmax routers (a softmax cannot see
  a shared shift, so penalising one would fight the host loss for nothing).
"""

from __future__ import annotations

from torch import Tensor

from vsraq_modifier.objective.pair import PreparedPair
from vsraq_modifier.objective.sensitivity import weighted_mean
from vsraq_modifier.routing import dense_weights

__all__ = ["VALUE_TARGETS", "DENOM_FLOOR", "value_term", "weight_error", "logit_error"]

VALUE_TARGETS = ("logits", "scores", "both")
#: floor of the reference's mean squared size (an all-equal softmax router has
#: centred logits of exactly 0)
DENOM_FLOOR = 1e-8


def _relative(err: Tensor, ref_sq: Tensor, weights: Tensor) -> Tensor:
    denom = ref_sq.mean().detach().clamp_min(DENOM_FLOOR)
    return weighted_mean(err, weights) / denom


def weight_error(prep: PreparedPair, weights: Tensor) -> Tensor:
    """mean_t w_t ||g_t - g*_t||^2 / mean_t ||g*_t||^2, g: dense routing weights."""
    g = dense_weights(prep.z, prep.own_indices, prep.spec)
    g_ref = dense_weights(prep.z_ref, prep.ref_indices, prep.spec).detach()
    err = (g - g_ref).square().sum(dim=-1)
    return _relative(err, g_ref.square().sum(dim=-1), weights)


def _centred(z: Tensor, prep: PreparedPair) -> Tensor:
    if prep.spec.score_fn == "softmax":
        return z - z.mean(dim=-1, keepdim=True)
    return z


def logit_error(prep: PreparedPair, weights: Tensor) -> Tensor:
    """mean_t w_t ||z_t - z*_t||^2 / mean_t ||z*_t||^2 (centred for softmax routers)."""
    z, z_ref = _centred(prep.z, prep), _centred(prep.z_ref, prep)
    err = (z - z_ref).square().sum(dim=-1)
    return _relative(err, z_ref.square().sum(dim=-1), weights)


def value_term(prep: PreparedPair, weights: Tensor, target: str = "logits") -> Tensor:
    """L_value for ``target`` in logits | scores | both (both: the sum)."""
    if target not in VALUE_TARGETS:
        raise ValueError(f"value_target={target!r}; use one of {VALUE_TARGETS}")
    out = None
    if target in ("scores", "both"):
        out = weight_error(prep, weights)
    if target in ("logits", "both"):
        lg = logit_error(prep, weights)
        out = lg if out is None else out + lg
    assert out is not None
    return out
