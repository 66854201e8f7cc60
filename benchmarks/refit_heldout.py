"""The router re-fit's safeguard checked on the held-out text, one router at a time.

Comparing a cell with the re-fit against the same method without it mixes the
re-fit with everything else that differs between two quantizations. This asks
the question the safeguard answers on the held-aside calibration tokens: on the
*same* inputs (each router's input in the quantized model, held-out text), does
the re-fitted router agree with the reference's choice less than the original
router would? The original router is the reference's own (routers stay in full
precision), run on the quantized model's router input by a forward hook, so one
pass gives both answers for every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vsraq_modifier.metrics.agreement import RoutingAccumulator
from vsraq_modifier.metrics.evaluate import chunk_token_ids
from vsraq_modifier.metrics.hooks import RoutingCapture
from vsraq_modifier.routers.base import RouterSite
from vsraq_modifier.routers.registry import find_routers
from vsraq_modifier.routing import Routing, route, set_jaccard


class OriginalRouterCapture(RoutingCapture):
    """On each quantized router's call, also runs the reference's router of the
    same layer on the same input and records its decision in :attr:`original`."""

    def __init__(self, sites: Sequence[RouterSite], originals: Sequence[RouterSite]):
        super().__init__(sites)
        self._original = {s.layer: s for s in originals}
        self.original: dict[int, Routing] = {}

    def reset(self) -> None:
        super().reset()
        self.original = {}

    def _make_hook(self, site: RouterSite) -> Any:
        own = super()._make_hook(site)
        ref = self._original[site.layer]

        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            with torch.no_grad():
                out = ref.router(*args)
                self.original[site.layer] = route(ref.logits(out).detach(), ref.spec)
            return own(module, args, output)

        return hook


@torch.no_grad()
def original_router_agreement(
    reference: torch.nn.Module,
    quantized: torch.nn.Module,
    token_ids: torch.Tensor,
    *,
    seq_len: int,
) -> list[dict[str, float | int]]:
    """Per MoE layer: the Jaccard with the reference's expert choice of the
    quantized model's router (``refitted``) and of the original router on the same
    input (``original``), their difference, and its standard error over tokens
    (``gain_se``, from the paired per-token differences)."""
    ref_sites, q_sites = find_routers(reference), find_routers(quantized)
    if [s.layer for s in ref_sites] != [s.layer for s in q_sites]:
        raise ValueError("the two models have routers at different layers")
    ref_cap = RoutingCapture(ref_sites)
    q_cap = OriginalRouterCapture(q_sites, ref_sites)
    mine, orig = RoutingAccumulator(), RoutingAccumulator()
    diffs: dict[int, list[torch.Tensor]] = {}
    for ids in chunk_token_ids(token_ids, seq_len):
        with ref_cap:
            ref_cap.reset()
            reference(input_ids=ids.unsqueeze(0), use_cache=False)
            ref_cap.check_called_once()
        with q_cap:
            q_cap.reset()
            quantized(input_ids=ids.unsqueeze(0), use_cache=False)
            q_cap.check_called_once()
        for layer, r in ref_cap.routings.items():
            mine.update(layer, r, q_cap.routings[layer])
            orig.update(layer, r, q_cap.original[layer])
            d = _jaccard(r, q_cap.routings[layer]) - _jaccard(r, q_cap.original[layer])
            diffs.setdefault(layer, []).append(d)
    return [
        {
            "layer": a.layer,
            "tokens": a.tokens,
            "refitted": a.jaccard,
            "original": b.jaccard,
            "gain": a.jaccard - b.jaccard,
            "gain_se": _se(torch.cat(diffs[a.layer])),
        }
        for a, b in zip(mine.result(), orig.result())
    ]


def _jaccard(a: Routing, b: Routing) -> torch.Tensor:
    return set_jaccard(a.indices, b.indices)


def _se(d: torch.Tensor) -> float:
    return float(d.std() / d.numel() ** 0.5) if d.numel() > 1 else float("nan")
