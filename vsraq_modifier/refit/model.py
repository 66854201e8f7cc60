"""The model-level loop of the router re-fit: routers re-fitted one by one in
model order, each on its inputs in the quantized model with the routers before it
already re-fitted, against the reference's router logits on the same tokens.
Needs only torch and transformers-style models (no host import); ``vsraq refit``
and benchmarks/refit_sweep.py run it, an in-loop host integration calls
:func:`vsraq_modifier.refit.refit_router` per block instead."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vsraq_modifier.refit.fit import RefitOptions, RefitResult, apply_fit, refit_router

__all__ = ["batches", "refit_routers", "router_inputs"]


class _Stop(Exception):
    """Ends a forward pass once the router of interest has been reached."""


def batches(samples: list[torch.Tensor], size: int, device: str) -> list[torch.Tensor]:
    return [
        torch.cat(samples[i : i + size]).to(device)
        for i in range(0, len(samples), size)
    ]


def _reference_logits(
    model: nn.Module, sites: Sequence[Any], batches: list[torch.Tensor]
) -> dict[int, torch.Tensor]:
    got: dict[int, list[torch.Tensor]] = {s.layer: [] for s in sites}

    def hook(site: Any) -> Callable:
        def f(_m: nn.Module, _a: Any, out: Any) -> None:
            got[site.layer].append(site.logits(out).detach().float().cpu())

        return f

    handles = [s.router.register_forward_hook(hook(s)) for s in sites]
    try:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


def router_inputs(
    model: nn.Module, site: Any, batches: list[torch.Tensor]
) -> torch.Tensor:
    """[N, H] inputs of one router over all batches (forward stops at the router)."""
    got: list[torch.Tensor] = []

    def pre(_m: nn.Module, args: Any) -> None:
        x = args[0]
        got.append(x.detach().reshape(-1, x.shape[-1]).float().cpu())
        raise _Stop

    handle = site.router.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            for ids in batches:
                try:
                    model(input_ids=ids, use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return torch.cat(got)


def refit_routers(
    reference: nn.Module,
    quantized: nn.Module,
    batches: list[torch.Tensor],
    options: RefitOptions,
    dtypes: dict[int, torch.dtype] | None = None,
    progress: bool = True,
) -> list[tuple[Any, RefitResult]]:
    """Re-fit every router of ``quantized`` in model order, in place (a fit not
    kept leaves the router as it was). ``dtypes``: per layer, the dtype the router
    is stored in (the in-memory router gets the stored values)."""
    from tqdm.auto import tqdm

    from vsraq_modifier.routers import find_routers

    ref_sites, q_sites = find_routers(reference), find_routers(quantized)
    if [(s.layer, s.spec.num_experts) for s in ref_sites] != [
        (s.layer, s.spec.num_experts) for s in q_sites
    ]:
        raise ValueError(
            "the reference's and the checkpoint's MoE routers "
            "differ (layers, experts); not the same model"
        )
    ref_logits = _reference_logits(reference, ref_sites, batches)
    out = []
    for site in tqdm(q_sites, desc="re-fitting routers", disable=not progress):
        x = router_inputs(quantized, site, batches)
        r = site.router
        bias = r.bias if isinstance(getattr(r, "bias", None), torch.Tensor) else None
        res = refit_router(
            r.weight,
            bias,
            site.spec,
            x,
            ref_logits[site.layer],
            options=options,
            dtype=(dtypes or {}).get(site.layer),
        )
        apply_fit(r, site.spec, res)
        out.append((site, res))
    return out
