"""One router's logits, quantized and reference, reduced to what every term needs.

:func:`prepare` validates a :class:`RouterPair` once (shapes, mask, finite values),
drops padding tokens *before any arithmetic* (so whatever padding positions hold can
never reach the loss or its gradient), moves everything to the compute dtype, and
takes the reference decision exactly as the model makes it (:func:`route` on the
reference logits in their own dtype, ties included).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from vsraq_modifier.guards import all_finite
from vsraq_modifier.routing import (
    RouterSpec,
    group_mask,
    group_scores,
    route,
    selection_scores,
)

__all__ = ["RouterPair", "NonFiniteRoutingError", "PreparedPair", "prepare"]


class NonFiniteRoutingError(ValueError):
    """Router logits hold NaN or inf: the quantized block (or the reference cache)
    diverged; a routing loss on such values would poison every gradient."""


@dataclass
class RouterPair:
    """One router seen by both models on the same tokens.

    ``logits``: [..., E] quantized model's router logits (with grad);
    ``ref_logits``: [..., E] full-precision logits (detached here);
    ``mask``: bool, one entry per token (any shape with ``logits.shape[:-1]``'s
    number of elements), True = valid token, False = padding.
    """

    logits: Tensor
    ref_logits: Tensor
    spec: RouterSpec
    mask: Tensor | None = None


def _compute_dtype(t: Tensor) -> torch.dtype:
    # float64 stays float64 (gradcheck); fp16/bf16/fp32 are all computed in float32
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_finite(z: Tensor, z_ref: Tensor) -> None:
    if all_finite(z) and all_finite(z_ref):
        return
    sources = {"logits": "the quantized block", "ref_logits": "the reference model"}
    for name, t in (("logits", z), ("ref_logits", z_ref)):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise NonFiniteRoutingError(
                f"RouterPair.{name} has {bad} non-finite entries (NaN/inf) among "
                f"{t.numel()} on valid tokens; {sources[name]} produced them. "
                "Check the block's inputs / quantization parameters "
                "(or lower the learning rate) before adding a routing loss."
            )


@dataclass
class PreparedPair:
    """Valid tokens only, [T, E] in the compute dtype; reference quantities detached.

    ``spec`` computes scores in the input dtype (the logits already are float32 /
    float64), so selection scores keep float64 under gradcheck.
    """

    z: Tensor  # quantized logits, with grad
    z_ref: Tensor  # reference logits, detached
    spec: RouterSpec
    ref_indices: Tensor  # [T, k] the reference's own top-k (as the model picks them)
    own_indices: Tensor  # [T, k] the quantized model's own top-k

    @property
    def num_tokens(self) -> int:
        return self.z.shape[0]

    @cached_property
    def scores(self) -> Tensor:
        """Quantized selection scores c [T, E] (differentiable)."""
        return selection_scores(self.z, self.spec)

    @cached_property
    def ref_scores(self) -> Tensor:
        """Reference selection scores c* [T, E]."""
        return selection_scores(self.z_ref, self.spec)

    @cached_property
    def ref_selected(self) -> Tensor:
        """S*: bool [T, E], the reference's selected experts."""
        return torch.zeros_like(self.z_ref, dtype=torch.bool).scatter_(
            -1, self.ref_indices, True
        )

    @cached_property
    def ref_group_experts(self) -> Tensor:
        """bool [T, E]: experts of the reference's selected groups (all True when the
        router is not group-limited)."""
        return group_mask(self.ref_scores, self.spec)

    @cached_property
    def ref_group_selected(self) -> Tensor:
        """bool [T, G]: the reference's selected groups."""
        per = self.spec.num_experts // self.spec.n_group
        return self.ref_group_experts[:, ::per]

    def group_scores_of(self, scores: Tensor) -> Tensor:
        return group_scores(scores, self.spec)


def _token_mask(pair: RouterPair, num_tokens: int) -> Tensor | None:
    if pair.mask is None:
        return None
    mask = pair.mask.reshape(-1)
    if mask.numel() != num_tokens:
        raise ValueError(
            f"RouterPair.mask has {mask.numel()} entries but the logits hold "
            f"{num_tokens} tokens (shape {tuple(pair.logits.shape)}); pass one "
            "entry per token (True = valid)."
        )
    return mask.to(device=pair.logits.device, dtype=torch.bool)


def prepare(pair: RouterPair) -> PreparedPair | None:
    """Validate ``pair`` and keep its valid tokens; None when it has none."""
    spec = pair.spec
    if pair.logits.shape != pair.ref_logits.shape:
        raise ValueError(
            f"RouterPair.logits {tuple(pair.logits.shape)} and ref_logits "
            f"{tuple(pair.ref_logits.shape)} must have the same shape"
        )
    if pair.logits.ndim == 0 or pair.logits.shape[-1] != spec.num_experts:
        raise ValueError(
            f"router logits of shape {tuple(pair.logits.shape)} do not end in "
            f"spec.num_experts={spec.num_experts}"
        )
    z = pair.logits.reshape(-1, spec.num_experts)
    z_ref = pair.ref_logits.detach().reshape(-1, spec.num_experts).to(z.device)
    mask = _token_mask(pair, z.shape[0])
    if mask is not None:
        if not bool(mask.any()):
            return None
        z, z_ref = z[mask], z_ref[mask]
    if z.shape[0] == 0:
        return None
    _check_finite(z.detach(), z_ref)
    # decisions exactly as the models make them (their own dtype, ties included)
    ref_indices = route(z_ref, spec).indices
    own_indices = route(z.detach(), spec).indices
    dtype = _compute_dtype(z)
    cspec = dataclasses.replace(spec, score_dtype="input")
    return PreparedPair(
        z=z.to(dtype),
        z_ref=z_ref.to(dtype),
        spec=cspec,
        ref_indices=ref_indices,
        own_indices=own_indices,
    )
