"""Forward hooks on a model's MoE routers: read each router's decision, or force it.

Both work on the router module of every :class:`~vsraq_modifier.routers.RouterSite`,
so they see what the model itself computes, in the stock transformers blocks and in
the hosts' rewritten ones (AutoRound's ``nn.Linear`` gates return bare logits).
Each raises when a router did not run during a forward pass: a hook that never fires
would silently measure nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vsraq_modifier.routers.base import RouterSite
from vsraq_modifier.routing import RouterSpec, Routing, dense_weights, route

__all__ = ["RouterNotCalledError", "RoutingCapture", "RouterForcing", "forced_output"]


class RouterNotCalledError(RuntimeError):
    """A hooked router did not run (or ran more than once) in one forward pass."""


class _SiteHooks:
    """Registers one forward hook per site; use as a context manager."""

    def __init__(self, sites: Sequence[RouterSite]) -> None:
        layers = [s.layer for s in sites]
        if len(set(layers)) != len(layers):
            raise ValueError(f"more than one router per decoder layer: {layers}")
        self.sites = list(sites)
        self._handles: list[Any] = []
        self._calls: dict[int, int] = {}

    def __enter__(self) -> _SiteHooks:
        for site in self.sites:
            self._handles.append(
                site.router.register_forward_hook(self._make_hook(site))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_hook(self, site: RouterSite) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            self._calls[site.layer] = self._calls.get(site.layer, 0) + 1
            return self._on_output(site, output)

        return hook

    def _on_output(self, site: RouterSite, output: Any) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        self._calls = {}

    def check_called_once(self) -> None:
        """Raise unless every router ran exactly once since :meth:`reset`."""
        bad = {s.layer: self._calls.get(s.layer, 0) for s in self.sites}
        bad = {layer: n for layer, n in bad.items() if n != 1}
        if bad:
            raise RouterNotCalledError(
                "routers of decoder layers "
                + ", ".join(f"{layer} (called {n}x)" for layer, n in bad.items())
                + " did not run exactly once in the forward pass; the model's MoE "
                "blocks do not call the module the router adapter found"
            )


class RoutingCapture(_SiteHooks):
    """Records each router's decision (``route(site.logits(output), site.spec)``)
    in :attr:`routings` (decoder layer index -> :class:`Routing`)."""

    def __init__(self, sites: Sequence[RouterSite]) -> None:
        super().__init__(sites)
        self.routings: dict[int, Routing] = {}

    def reset(self) -> None:
        super().reset()
        self.routings = {}

    def _on_output(self, site: RouterSite, output: Any) -> Any:
        with torch.no_grad():
            self.routings[site.layer] = route(site.logits(output).detach(), site.spec)
        return None


def forced_output(
    output: Any, logits: torch.Tensor, indices: torch.Tensor, spec: RouterSpec
) -> Any:
    """The router output with its expert choice replaced by ``indices`` [T, k].

    The weights come from the model's own logits by its own rule over the forced
    set (:func:`~vsraq_modifier.routing.dense_weights`: renormalised over the set
    when the model renormalises, scaled by routed_scaling_factor, softmax over the
    selected logits for gpt-oss), so forcing the model's own choice changes nothing.
    """
    indices = indices.to(logits.device)
    if isinstance(output, tuple):
        if len(output) != 3:
            raise TypeError(
                f"router output is a {len(output)}-tuple; forcing expects "
                "(logits, weights, indices)"
            )
        _, weights, own = output
        w = dense_weights(logits, indices, spec).gather(-1, indices)
        w = w.to(weights.dtype).reshape(weights.shape)
        return (output[0], w, indices.to(own.dtype).reshape(own.shape))
    # bare logits (a host's nn.Linear gate): the block computes softmax -> top-k ->
    # renormalise inline; logits at -inf off the forced set make it select exactly
    # the forced set, and its softmax renormalised over that set equals the model's
    # own weights there.
    if not (spec.score_fn == "softmax" and spec.normalize and spec.bias is None):
        raise NotImplementedError(
            "forcing a router that returns bare logits is supported only for "
            "softmax routers that renormalise their top-k weights (norm_topk_prob); "
            "load the checkpoint with the stock transformers MoE block instead"
        )
    keep = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    keep.scatter_(-1, indices, True)
    forced = logits.masked_fill(~keep, float("-inf"))
    return forced.to(output.dtype).reshape(output.shape)


class RouterForcing(_SiteHooks):
    """Replaces each router's output so that the block runs the experts in
    :attr:`targets` (decoder layer index -> indices [T, k]); set them before each
    forward pass."""

    def __init__(self, sites: Sequence[RouterSite]) -> None:
        super().__init__(sites)
        self.targets: dict[int, torch.Tensor] = {}

    def _on_output(self, site: RouterSite, output: Any) -> Any:
        if site.layer not in self.targets:
            raise KeyError(f"no forced expert choice for decoder layer {site.layer}")
        indices = self.targets[site.layer]
        logits = site.logits(output)
        if indices.shape != (logits.shape[0], site.spec.top_k):
            raise ValueError(
                f"layer {site.layer}: forced indices {tuple(indices.shape)} do not "
                f"match {logits.shape[0]} tokens x top_k={site.spec.top_k}"
            )
        with torch.no_grad():
            return forced_output(output, logits, indices, site.spec)
