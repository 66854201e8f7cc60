"""Structure alignment, option ``set_nll`` (after ProbMoE): the reference top-k set's
negative log-likelihood under the exact-k subset distribution.

P(S | u) = exp(sum_{i in S} u_i) / e_k(exp(u)), e_k the elementary symmetric polynomial
of degree k, computed exactly in log space by the recursion
log e_j(x_1..x_n) = logaddexp(log e_j(x_1..x_{n-1}), log e_{j-1}(x_1..x_{n-1}) + u_n).
The term is relu(log P(S* | u*) - log P(S* | u)) per token: zero, with zero gradient,
wherever the quantized router is at least as sure of the reference set as the
reference. Unclamped, the difference rewards a more confident set without bound:
normalised by its (small) first value it dominated the block's loss and drove the
routers to saturation (shipped model, W3A16: validation Jaccard 0.78 vs 0.97 for
mse; docs/results.md).

u are "ranking logits", a strictly increasing function of the selection scores, so
that the most likely set is the set the router picks:
- softmax and logits routers: u = z (softmax is monotone in z);
- sigmoid routers: u = 4 c, c = sigmoid(z) + bias. Near z = 0, 4 sigmoid(z) ~ 2 + z,
  so without a bias this has the sharpness of the logits, and the bias shifts it
  exactly as it shifts the ranking.
Group-limited routers: the distribution is over the experts of the reference's
selected groups only (others never pushed, as in the margin variant).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vsraq_modifier.objective.pair import PreparedPair
from vsraq_modifier.objective.sensitivity import weighted_mean
from vsraq_modifier.routing import selection_scores

__all__ = [
    "log_esp",
    "log_set_prob",
    "ranking_logits",
    "set_nll_per_token",
    "set_nll_term",
]

#: stands for log(0) without producing inf - inf = NaN in logaddexp's gradient
_NEG = -1e30
#: sigmoid'(0) = 1/4: 4 * sigmoid(z) has unit slope in z at 0
_SIGMOID_SCALE = 4.0


def log_esp(u: Tensor, k: int) -> Tensor:
    """log e_k(exp(u)) over the last dim of ``u`` [..., n]; exact, finite gradient.

    Entries of ``u`` at ``_NEG`` or below act as absent experts.
    """
    n = u.shape[-1]
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in 1..{n}")
    neg = torch.full((*u.shape[:-1], k), _NEG, dtype=u.dtype, device=u.device)
    # state[..., j] = log e_j over the experts seen so far, j = 0..k
    state = torch.cat([torch.zeros_like(neg[..., :1]), neg], dim=-1)
    for i in range(n):
        take = state[..., :-1] + u[..., i : i + 1]
        state = torch.cat(
            [state[..., :1], torch.logaddexp(state[..., 1:], take)], dim=-1
        )
    return state[..., k]


def ranking_logits(z: Tensor, prep: PreparedPair) -> Tensor:
    """u [T, E]: strictly increasing in the selection score of each expert."""
    spec = prep.spec
    if spec.score_fn == "sigmoid":
        u = _SIGMOID_SCALE * selection_scores(z, spec)
    else:
        u = z
    if spec.group_limited:
        u = u.masked_fill(~prep.ref_group_experts, _NEG)
    return u


def log_set_prob(u: Tensor, selected: Tensor, k: int) -> Tensor:
    """log P(S | u) [T] for the bool set ``selected`` [T, E] of size k."""
    return (u * selected).sum(dim=-1) - log_esp(u, k)


def set_nll_per_token(prep: PreparedPair) -> Tensor:
    """log P(S* | u*) - log P(S* | u), per token [T]."""
    k, sel = prep.spec.top_k, prep.ref_selected
    ref = log_set_prob(ranking_logits(prep.z_ref, prep), sel, k).detach()
    return ref - log_set_prob(ranking_logits(prep.z, prep), sel, k)


def set_nll_term(prep: PreparedPair, weights: Tensor) -> Tensor:
    """mean_t w_t relu(log P(S*_t | u*_t) - log P(S*_t | u_t))."""
    return weighted_mean(torch.relu(set_nll_per_token(prep)), weights)
