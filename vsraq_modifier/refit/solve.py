"""The float64 math of the router re-fit (:mod:`vsraq_modifier.refit`): the
weighted ridge solve per expert row, the targets and the boundary weights."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from vsraq_modifier.refit.margin import margin_refine
from vsraq_modifier.routing import RouterSpec, group_mask, selection_scores

if TYPE_CHECKING:
    from vsraq_modifier.refit import RefitOptions

__all__ = ["boundary_weights", "fit64", "resolved_target"]

Target = Literal["auto", "logits", "centred", "sigmoid"]


def resolved_target(spec: RouterSpec, target: Target) -> str:
    """``auto``: centred for softmax and logits routers, logits for sigmoid ones
    (routed as well as the sigmoid target on the validation split, with one Gram
    matrix shared by the experts instead of one per expert: docs/refit.md);
    refuses a target that does not fit the router."""
    if target == "auto":
        return "logits" if spec.score_fn == "sigmoid" else "centred"
    if target == "centred" and spec.score_fn == "sigmoid":
        raise ValueError(
            "target='centred' does not fit a sigmoid router: its "
            "scores see a shared shift; use sigmoid or logits"
        )
    if target == "sigmoid" and spec.score_fn != "sigmoid":
        raise ValueError(
            f"target='sigmoid' needs a sigmoid router, this one is "
            f"{spec.score_fn}; use centred or logits"
        )
    return target


def boundary_weights(ref_logits: Tensor, spec: RouterSpec) -> Tensor:
    """[T, E] float64: 1 on each token's k-th and (k+1)-th experts by the
    reference's selection scores (inside its kept groups) and, for group-limited
    routers, on the two best experts of the last kept and the first dropped group."""
    z = ref_logits.reshape(-1, spec.num_experts).float()
    s = selection_scores(z, spec).double()
    w = torch.zeros_like(s)
    choice = s.masked_fill(~group_mask(s, spec), float("-inf"))
    k = spec.top_k
    order = choice.argsort(dim=-1, descending=True)
    w.scatter_(-1, order[:, k - 1 : min(k + 1, spec.num_experts)], 1.0)
    if spec.group_limited:
        per = spec.num_experts // spec.n_group
        grouped = s.view(-1, spec.n_group, per)
        top2 = grouped.topk(min(2, per), dim=-1)
        gorder = top2.values.sum(-1).argsort(dim=-1, descending=True)
        for g in gorder[:, spec.topk_group - 1 : spec.topk_group + 1].unbind(-1):
            best = top2.indices.gather(
                1, g[:, None, None].expand(-1, 1, top2.indices.shape[-1])
            )
            w.scatter_(-1, g[:, None] * per + best[:, 0], 1.0)
    return w


#: bytes of one token chunk of the stacked weighted inputs in :func:`_expert_grams`
CHUNK_BYTES = 16 << 20
#: bytes of the Gram matrices :func:`_expert_grams` builds at once (one expert's
#: Gram at the least, whatever its size)
GROUP_BYTES = 64 << 20


def _expert_grams(x: Tensor, c: Tensor) -> Iterator[tuple[int, Tensor]]:
    """(e, sum_t c_te x_t x_t^T) for each expert e, float64 [P, P].

    Per group of experts and chunk of tokens one product ``x^T [c_1 x, ..., c_g
    x]`` with g*P columns: on a CPU twice as fast as one [P, T] @ [T, P] product
    per expert (the sigmoid target weights every expert differently, so that
    is the re-fit's main cost there). Memory stays bounded by CHUNK_BYTES and
    GROUP_BYTES whatever E and P."""
    t, p = x.shape
    e = c.shape[1]
    group = max(1, min(e, GROUP_BYTES // (p * p * x.element_size())))
    for first in range(0, e, group):
        g = min(group, e - first)
        cg = c[:, first : first + g]
        rows = max(1, CHUNK_BYTES // (g * p * x.element_size()))
        acc = x.new_zeros(p, g * p)
        for s in range(0, t, rows):
            xs = x[s : s + rows]
            stacked = xs[:, None, :] * cg[s : s + rows, :, None]
            acc.addmm_(xs.T, stacked.reshape(-1, g * p))
        for j in range(g):
            yield first + j, acc[:, j * p : (j + 1) * p]


def _solve(
    x: Tensor,
    y: Tensor,
    w: Tensor,
    reg: Tensor,
    prior: Tensor,
    s: Tensor | None = None,
    ones: bool = False,
) -> Tensor:
    """Per expert row e: argmin_th sum_t w_te (phi_et . th - y_te)^2 + sum_j
    reg_ej (th_j - prior_ej)^2 with features phi_et = [s_te x_t, (1 if ``ones``)].
    ``x``: [T, P]; ``y``: [T, E]; ``w``: [T, 1] (shared) or [T, E]; ``s``: [T, E]
    or None (1); ``reg``, ``prior``: [E, P (+1)]. Returns [E, P (+1)] (float64).
    Neither path of :func:`_normal_equations` builds an [E, T, P] tensor."""
    e = prior.shape[0]
    if s is None and not ones and w.shape[1] == 1 and bool((reg == reg[:1]).all()):
        gram = x.T @ (x * w) + torch.diag(reg[0])
        rhs = (y * w).T @ x + reg * prior
        return torch.linalg.solve(gram, rhs.T).T
    w = w.expand(-1, e) if w.shape[1] == 1 else w
    s = torch.ones_like(w) if s is None else s
    out = torch.empty_like(prior)
    for j, gram, rhs, cross in _normal_equations(x, y, w, s):
        if ones:
            gram = torch.cat(
                [
                    torch.cat([gram, cross[:, None]], 1),
                    torch.cat([cross, w[:, j].sum()[None]])[None],
                ],
                0,
            )
            rhs = torch.cat([rhs, (w[:, j] * y[:, j]).sum()[None]])
        gram = gram + torch.diag(reg[j])
        out[j] = torch.linalg.solve(gram, rhs + reg[j] * prior[j])
    return out


def _normal_equations(
    x: Tensor, y: Tensor, w: Tensor, s: Tensor
) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """Per expert e (all [T, E] but ``x``): (e, sum_t w s^2 x x^T, sum_t w s y x,
    sum_t w s x). Dense weights (most tokens count for most experts: uniform
    weights) build the Gram matrices in stacked products (:func:`_expert_grams`);
    sparse ones (boundary weights) per expert from the tokens it weights only."""
    if bool((w > 0).double().mean() > 0.5):
        rhs = x.T @ (w * s * y)  # [P, E]
        cross = x.T @ (w * s)
        for j, gram in _expert_grams(x, w * s * s):
            yield j, gram, rhs[:, j], cross[:, j]
        return
    for j in range(w.shape[1]):
        keep = w[:, j] > 0
        xe, we, se, ye = x[keep], w[keep, j], s[keep, j], y[keep, j]
        gram = xe.T @ (xe * (we * se * se)[:, None])
        yield j, gram, xe.T @ (we * se * ye), xe.T @ (we * se)


def _centre(z: Tensor) -> Tensor:
    return z - z.mean(dim=-1, keepdim=True)


def fit64(
    x: Tensor,
    ref: Tensor,
    w0: Tensor,
    b0: Tensor | None,
    c0: Tensor | None,
    spec: RouterSpec,
    options: RefitOptions,
) -> tuple[Tensor, Tensor | None, Tensor | None, float, float]:
    """The fit in float64 on valid tokens: (W, b, correction bias, error before,
    error after)."""
    target = resolved_target(spec, options.target)
    if options.correction_bias and target != "sigmoid":
        raise ValueError(
            "correction_bias=True fits the selection bias in score space: it needs "
            f"target='sigmoid' (this router's target is {target!r})"
        )
    t = x.shape[0]
    ms = float((x * x).mean()) or 1.0
    dev = x.device
    ones = torch.ones(t, 1, dtype=torch.float64, device=dev)
    xa = torch.cat([x, ones], 1) if b0 is not None else x
    theta0 = torch.cat([w0, b0[:, None]], 1) if b0 is not None else w0
    base = (
        boundary_weights(ref, spec)
        if options.weights == "boundary"
        else torch.ones(t, 1, dtype=torch.float64, device=dev)
    )
    mass = base.sum(0) if base.shape[1] > 1 else base.sum(0).expand(spec.num_experts)
    col = torch.full((xa.shape[1],), ms, dtype=torch.float64, device=dev)
    if b0 is not None:
        col[-1] = 1.0
    if target != "sigmoid":
        reg = options.ridge * mass[:, None] * col[None, :]
        z0 = xa @ theta0.T
        r = ref - z0
        if target == "centred":
            r = _centre(r)
        delta = _solve(xa, r, base, reg.clamp_min(1e-300), torch.zeros_like(theta0))
        theta = theta0 + delta
        if options.refine:
            theta = margin_refine(
                xa, ref, theta, spec, options.refine, options.refine_weight
            )
        res_after = ref - xa @ theta.T
        if target == "centred":
            res_after = _centre(res_after)
        per = 1 if base.shape[1] > 1 else spec.num_experts

        def err(res: Tensor) -> float:
            return float((base * res * res).sum() / (base.sum() * per))

        w, b = (theta[:, :-1], theta[:, -1]) if b0 is not None else (theta, None)
        return w, b, c0, err(r), err(res_after)
    # sigmoid: Gauss-Newton in score space, sigma(z') ~ sigma(z) + sigma'(z) dz
    s_ref = ref.sigmoid()
    theta, corr = theta0.clone(), (c0.clone() if c0 is not None else None)
    fit_c = options.correction_bias and c0 is not None

    def err(th: Tensor, c: Tensor | None) -> float:
        res = s_ref - (xa @ th.T).sigmoid()
        if c is not None and c0 is not None:
            res = res - (c - c0)
        num = (base * res * res).sum()
        return float(
            num / (base.sum() * (1 if base.shape[1] > 1 else spec.num_experts))
        )

    before = current = err(theta, corr)
    for it in range(options.iters):
        z = xa @ theta.T
        if it == 0:  # linearised at the reference: s' - s* ~ sigma'(z*) (z' - z*)
            d = s_ref * (1 - s_ref)
            y = d * (ref - z)
        else:  # Gauss-Newton at the current fit, sigma(z') ~ sigma(z) + sigma'(z) dz
            sz = z.sigmoid()
            d = sz * (1 - sz)
            y = s_ref - sz - ((corr - c0) if fit_c else 0.0)
        prior = theta0 - theta
        scale = (d * d).mean(0)[:, None] * col[None, :]
        if fit_c:
            prior = torch.cat([prior, (c0 - corr)[:, None]], 1)
            scale = torch.cat(
                [scale, torch.ones(scale.shape[0], 1, dtype=scale.dtype, device=dev)], 1
            )
        ww = base if base.shape[1] > 1 else base.expand(t, spec.num_experts)
        reg = (options.ridge * mass[:, None] * scale).clamp_min(1e-300)
        step = _solve(xa, y, ww, reg, prior, s=d, ones=fit_c)
        # backtracking: a Gauss-Newton step on saturated logits can overshoot
        for alpha in (1.0, 0.5, 0.25, 0.125, 0.0625) if it else (1.0,):
            th = theta + alpha * step[:, : theta.shape[1]]
            c = corr + alpha * step[:, -1] if fit_c else corr
            e = err(th, c)
            if it == 0 or e < current:
                theta, corr, current = th, c, e
                break
        else:
            break
    w, b = (theta[:, :-1], theta[:, -1]) if b0 is not None else (theta, None)
    return w, b, corr, before, current
