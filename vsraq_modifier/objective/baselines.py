"""The baselines' routing terms (same code path as VSRAQ, no sensitivity weights).

- ``topk_mse``: MSE of the logits of the reference's top-k experts, over valid tokens
  and those k experts;
- ``router_kl``: KL(softmax(z*) || softmax(z)) per token, mean over valid tokens (in
  the spirit of EAQuant, arXiv 2506.13329), on the logits whatever the router's own
  score function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vsraq_modifier.objective.pair import PreparedPair

__all__ = ["topk_mse", "router_kl"]


def topk_mse(prep: PreparedPair) -> Tensor:
    """mean over valid tokens and S*_t of (z_ti - z*_ti)^2."""
    idx = prep.ref_indices
    return (prep.z.gather(-1, idx) - prep.z_ref.gather(-1, idx)).square().mean()


def router_kl(prep: PreparedPair) -> Tensor:
    """mean_t KL(softmax(z*_t) || softmax(z_t))."""
    logp = torch.log_softmax(prep.z, dim=-1)
    logp_ref = torch.log_softmax(prep.z_ref, dim=-1)
    kl = (logp_ref.exp() * (logp_ref - logp)).sum(dim=-1)
    # >= 0 exactly; rounding can leave -1e-9 where z ~ z* (and the gradient ~ 0)
    return kl.clamp_min(0.0).mean()
