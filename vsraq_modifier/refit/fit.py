"""Router re-alignment: re-fit a full-precision router to the inputs it sees in the
quantized model (pure torch, no host import).

Every recipe keeps the routers in full precision, but after the experts and the
attention are quantized, router l sees inputs ``x^q`` that differ from the
reference's ``x``. A linear router can absorb the linear part of that error: per
router, the ridge solution (float64, valid tokens only)

    W' = argmin_W'  sum_t sum_e w_te (W' x^q_t - target_t)_e^2 + lam' ||W' - W||^2,
    lam' = ridge * sum_t w_te * mean(x^2)

(``lam'`` scale-free: ``ridge`` is relative to the data term's mass and to the mean
square input coordinate). The result has the router's own dtype, shape and tensor
names, so the checkpoint's format and inference cost are unchanged.

Targets (``RefitOptions.target``): ``logits`` (the reference logits), ``centred``
(both sides centred over experts: softmax and top-k-of-logits routers cannot see a
shared shift, so none is spent on it), ``sigmoid`` (sigmoid routers: a fit in
score space, where the ranking happens: first the ridge on logits weighted by
sigmoid'(z*)^2, the linearisation at the reference, then ``iters - 1`` Gauss-Newton
steps on the score-space error with backtracking). Weights: ``uniform``, or
``boundary`` (only the reference's k-th and (k+1)-th experts of each token, and
for group-limited routers the two best experts of the last kept and the first
dropped group). ``correction_bias``: also
fit a selection-only bias (DeepSeek-V3 ``e_score_correction_bias``) in score space.

:func:`refit_router` adds the safeguard: it fits on part of the valid tokens and
keeps the fit only where it raises routing agreement (mean Jaccard of the top-k
sets) with the reference on the tokens held aside, by more than ``accept_se``
standard errors of that paired gain (default 0: any gain, what the validation
split supports; docs/refit.md "How strict the held-aside check is").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vsraq_modifier.guards import all_finite
from vsraq_modifier.objective.pair import NonFiniteRoutingError
from vsraq_modifier.refit.solve import Target, boundary_weights, fit64, resolved_target
from vsraq_modifier.routing import RouterSpec, route, set_jaccard

__all__ = [
    "DEFAULT_ACCEPT_SE",
    "DEFAULT_RIDGE",
    "apply_fit",
    "RefitOptions",
    "RefitResult",
    "RouterFit",
    "boundary_weights",
    "fit_router",
    "jaccard",
    "jaccard_per_token",
    "refit_router",
    "resolved_target",
    "solve_device",
]

#: default relative ridge (benchmarks/refit_sweep.py, docs/refit.md)
DEFAULT_RIDGE = 1e-3
#: held-aside gain needed, in standard errors (0: any gain; docs/refit.md)
DEFAULT_ACCEPT_SE = 0.0
Weighting = Literal["uniform", "boundary"]


@dataclass(frozen=True)
class RefitOptions:
    """How to re-fit a router. ``method``: none (keep the router) or ridge;
    ``ridge``: relative ridge strength (> 0); ``target``/``weights``/``iters``/
    ``correction_bias``: the fit variant (module docstring); ``holdout``: share of
    the valid tokens held aside for the safeguard (0: no safeguard, always keep the
    fit); ``refit_all``: once the safeguard keeps a fit, fit again on all the valid
    tokens (held-aside ones included) and keep that; ``seed``: which tokens are
    held aside; ``refine``/``refine_weight``: L-BFGS iterations and drift weight
    of the convex margin refinement after the ridge
    (:mod:`vsraq_modifier.refit.margin`; 0: off); ``accept_se``: how many
    standard errors of the paired per-token Jaccard gain the held-aside gain must
    exceed for the fit to be kept (0: any gain)."""

    method: Literal["none", "ridge"] = "none"
    ridge: float = DEFAULT_RIDGE
    target: Target = "auto"
    weights: Weighting = "uniform"
    iters: int = 1
    correction_bias: bool = False
    holdout: float = 0.25
    refit_all: bool = True
    refine: int = 0
    refine_weight: float = 1.0
    accept_se: float = DEFAULT_ACCEPT_SE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("none", "ridge"):
            raise ValueError(f"method={self.method!r}: use 'none' or 'ridge'")
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ValueError(f"ridge={self.ridge}: must be a finite number > 0")
        if self.target not in ("auto", "logits", "centred", "sigmoid"):
            raise ValueError(f"target={self.target!r}: auto|logits|centred|sigmoid")
        if self.weights not in ("uniform", "boundary"):
            raise ValueError(f"weights={self.weights!r}: use uniform or boundary")
        if self.iters < 1:
            raise ValueError(f"iters={self.iters}: must be >= 1")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout={self.holdout}: must be in [0, 1)")
        if not (math.isfinite(self.accept_se) and self.accept_se >= 0):
            raise ValueError(f"accept_se={self.accept_se}: must be a number >= 0")


@dataclass(frozen=True)
class RouterFit:
    """Router tensors in the router's own dtypes and shapes (``bias``: the linear
    bias, gpt-oss; ``correction_bias``: the selection-only bias, DeepSeek-V3)."""

    weight: Tensor
    bias: Tensor | None = None
    correction_bias: Tensor | None = None


@dataclass(frozen=True)
class RefitResult:
    """What :func:`refit_router` decided. ``fit`` is what to write (the original
    tensors when not ``accepted``); errors are the weighted mean squared residual in
    the target space on the fit tokens; agreements the mean Jaccard with the
    reference's top-k sets on the held-aside tokens (NaN without a safeguard);
    ``agreement_se`` the standard error of their paired per-token difference."""

    fit: RouterFit
    accepted: bool
    fit_error_before: float
    fit_error_after: float
    agreement_before: float
    agreement_after: float
    fit_tokens: int
    held_tokens: int
    agreement_se: float = float("nan")

    def summary(self) -> str:
        verdict = "re-fitted" if self.accepted else "kept the original"
        return (
            f"fit error {self.fit_error_before:.4g} -> {self.fit_error_after:.4g}, "
            f"held-aside Jaccard {self.agreement_before:.4f} -> "
            f"{self.agreement_after:.4f} (se {self.agreement_se:.4f}, "
            f"{self.held_tokens} tokens): {verdict}"
        )


def jaccard_per_token(
    logits: Tensor,
    ref_logits: Tensor,
    spec: RouterSpec,
    ref_spec: RouterSpec | None = None,
) -> Tensor:
    """Jaccard of the top-k sets routed from ``logits`` and ``ref_logits``, one
    float64 per token."""
    a, b = route(logits, spec).indices, route(ref_logits, ref_spec or spec).indices
    return set_jaccard(a, b)


def jaccard(
    logits: Tensor,
    ref_logits: Tensor,
    spec: RouterSpec,
    ref_spec: RouterSpec | None = None,
) -> float:
    """Mean Jaccard of the top-k sets routed from ``logits`` and ``ref_logits``."""
    if logits.shape[0] == 0:
        return float("nan")
    return float(jaccard_per_token(logits, ref_logits, spec, ref_spec).mean())


def solve_device(device: torch.device | str) -> torch.device:
    """Where a router's float64 solve runs: on its own CUDA device (seconds
    there; on a CPU the Gram matrices of a full-size router take minutes), on the
    CPU for every other device (MPS has no float64; other accelerators are
    untested)."""
    device = torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")


def _check_finite(**tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is None or all_finite(t):
            continue
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteRoutingError(
            f"router re-fit: {name} has {bad} non-finite entries (NaN/inf) among "
            f"{t.numel()} on valid tokens; the model that produced it diverged. "
            "Check the checkpoint and the calibration data before re-fitting."
        )


def _like(
    new: Tensor | None, old: Tensor | None, dtype: torch.dtype | None = None
) -> Tensor | None:
    if new is None or old is None:
        return old
    return new.to(device=old.device, dtype=dtype or old.dtype).reshape(old.shape)


def fit_router(
    weight: Tensor,
    bias: Tensor | None,
    spec: RouterSpec,
    x_q: Tensor,
    ref_logits: Tensor,
    mask: Tensor | None = None,
    options: RefitOptions = RefitOptions(method="ridge"),
    device: torch.device | str | None = None,
) -> tuple[RouterFit, float, float]:
    """The ridge fit of one router on all valid tokens, no safeguard:
    (tensors in the router's dtypes, shapes and device, fit error before, after).

    ``weight`` [E, H]; ``bias`` [E] or None; ``x_q`` [..., H] router inputs in the
    quantized model; ``ref_logits`` [..., E] the reference's logits on the same
    tokens; ``mask`` one bool per token (False: padding, ignored). The selection
    bias is ``spec.bias`` (fitted only with ``options.correction_bias``).
    ``device``: where the solve runs (default :func:`solve_device` of the
    router's)."""
    dev = solve_device(weight.device if device is None else device)
    x, ref = _valid(x_q, ref_logits, mask, weight.shape[1], spec.num_experts, dev)
    _check_finite(weight=weight, bias=bias, x_q=x, ref_logits=ref)
    return _fit_valid(weight, bias, spec, x, ref, options)


def _fit_valid(
    weight: Tensor,
    bias: Tensor | None,
    spec: RouterSpec,
    x: Tensor,
    ref: Tensor,
    options: RefitOptions,
) -> tuple[RouterFit, float, float]:
    """:func:`fit_router` on tokens already checked (float64 [T, H] and [T, E],
    on the device the solve runs on)."""
    dev = x.device
    c0 = spec.bias.detach().to(dev, torch.float64) if spec.bias is not None else None
    if x.shape[0] == 0:
        return RouterFit(weight, bias, spec.bias), float("nan"), float("nan")
    w, b, c, before, after = fit64(
        x,
        ref,
        weight.detach().to(dev, torch.float64),
        bias.detach().to(dev, torch.float64) if bias is not None else None,
        c0,
        spec,
        options,
    )
    fit = RouterFit(_like(w, weight), _like(b, bias), _like(c, spec.bias))
    return fit, before, after


def _valid(
    x_q: Tensor,
    ref: Tensor,
    mask: Tensor | None,
    h: int,
    e: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    x = x_q.reshape(-1, x_q.shape[-1])
    z = ref.reshape(-1, ref.shape[-1])
    if x.shape[-1] != h or z.shape[-1] != e or x.shape[0] != z.shape[0]:
        raise ValueError(
            f"router re-fit: inputs {tuple(x_q.shape)} and reference "
            f"logits {tuple(ref.shape)} do not match a router [{e}, {h}]"
        )
    if mask is not None:
        keep = mask.reshape(-1).to(torch.bool).cpu()
        if keep.numel() != x.shape[0]:
            raise ValueError(f"mask has {keep.numel()} entries for {x.shape[0]} tokens")
        if not bool(keep.all()):  # no padding: no [T, H] copy
            x, z = x.cpu()[keep], z.cpu()[keep]
    return x.detach().to(device, torch.float64), z.detach().to(device, torch.float64)


def _logits(x: Tensor, fit: RouterFit) -> Tensor:
    """Router logits in float32 from the tensors as they will be stored."""
    out = x.float() @ fit.weight.detach().to(x.device, torch.float32).T
    if fit.bias is None:
        return out
    return out + fit.bias.detach().to(x.device, torch.float32)


def refit_router(
    weight: Tensor,
    bias: Tensor | None,
    spec: RouterSpec,
    x_q: Tensor,
    ref_logits: Tensor,
    mask: Tensor | None = None,
    options: RefitOptions = RefitOptions(method="ridge"),
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> RefitResult:
    """Re-fit one router with the held-aside safeguard (arguments as
    :func:`fit_router`; ``dtype``: the dtype the tensors will be stored in, default
    the router's own; the check routes with the fit rounded to it; the result's
    tensors are on the router's device).

    A seeded ``options.holdout`` share of the valid tokens is held aside; the fit
    uses the rest and is kept only if it raises the mean Jaccard with the
    reference's top-k sets on the held-aside tokens by more than
    ``options.accept_se`` standard errors of the paired per-token gain (a tie
    keeps the original, whatever ``accept_se``)."""
    dev = solve_device(weight.device if device is None else device)
    x, ref = _valid(x_q, ref_logits, mask, weight.shape[1], spec.num_experts, dev)
    _check_finite(weight=weight, bias=bias, x_q=x, ref_logits=ref)
    original = RouterFit(weight, bias, spec.bias)
    n = x.shape[0]
    held = int(round(options.holdout * n)) if n >= 2 else 0
    if options.holdout > 0 and n >= 2:
        held = min(max(held, 1), n - 1)
    if options.method == "none" or n == 0 or (options.holdout > 0 and held == 0):
        nan = float("nan")
        return RefitResult(original, False, nan, nan, nan, nan, n - held, held)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(options.seed))
    perm = perm.to(dev)  # drawn on the CPU: the same tokens on every device
    hi, fi = perm[:held], perm[held:]
    fit, before, after = _fit_valid(weight, bias, spec, x[fi], ref[fi], options)
    stored = RouterFit(
        _like(fit.weight, weight, dtype),
        _like(fit.bias, bias, dtype),
        fit.correction_bias,
    )
    if held == 0:
        return RefitResult(
            stored, True, before, after, float("nan"), float("nan"), n, 0
        )
    new_spec = (
        dataclasses.replace(spec, bias=fit.correction_bias)
        if fit.correction_bias is not None
        else spec
    )
    old = RouterFit(_like(weight, weight, dtype), _like(bias, bias, dtype))
    z_ref = ref[hi].float()
    j0 = jaccard_per_token(_logits(x[hi], old), z_ref, spec)
    j1 = jaccard_per_token(_logits(x[hi], stored), z_ref, new_spec, spec)
    a0, a1 = float(j0.mean()), float(j1.mean())
    se = float((j1 - j0).std() / math.sqrt(held)) if held >= 2 else float("nan")
    # with one held-aside token there is no standard error: any gain then
    keep = a1 - a0 > (options.accept_se * se if held >= 2 else 0.0)
    if keep and options.refit_all:
        full, _, _ = _fit_valid(weight, bias, spec, x, ref, options)
        stored = RouterFit(
            _like(full.weight, weight, dtype),
            _like(full.bias, bias, dtype),
            full.correction_bias,
        )
    return RefitResult(
        stored if keep else original, keep, before, after, a0, a1, n - held, held, se
    )


def apply_fit(router: torch.nn.Module, spec: RouterSpec, result: RefitResult) -> bool:
    """Write a kept fit into the router module in place (weight, its linear bias,
    and ``spec.bias``, the router's selection-bias buffer, when fitted); returns
    ``result.accepted``. Values are copied, so dtype, shape and device stay."""
    if not result.accepted:
        return False
    fit = result.fit
    with torch.no_grad():
        router.weight.copy_(fit.weight)
        bias = getattr(router, "bias", None)
        if isinstance(bias, torch.Tensor) and fit.bias is not None:
            bias.copy_(fit.bias)
        if spec.bias is not None and fit.correction_bias is not None:
            spec.bias.copy_(fit.correction_bias)
    return True
