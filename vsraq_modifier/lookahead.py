"""Look-ahead: the logits of the next MoE router downstream of a block.

A block's own router sits upstream of its experts, so a loss on it cannot reach the
expert weights (docs/objective.md). The next router downstream can: this module runs
the (full-precision, untuned) decoder layers between a block and that router on the
block's output and stops at the router, returning its logits with the autograd graph
intact. Host-agnostic: both integrations call it with the host's layer kwargs.

The attention of those layers can be frozen at the reference
(``lookahead_attention: reference``): each layer's ``self_attn`` then returns the
output it gave on the full-precision model's hidden states, recorded on the
reference pass, instead of running again; the router's input keeps the tuned
block's error through the residual stream and the norm, and the gradient skips
the attention (about half of the look-ahead's cost, docs/objective.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from vsraq_modifier.routers.base import RouterSite

__all__ = [
    "ATTENTION",
    "KwargsFor",
    "LookaheadPath",
    "attention_module",
    "next_router_path",
    "router_logits_through",
]

#: the attribute of a decoder layer that holds its attention (every family with
#: one; nemotron_h's single-mixer blocks have none, and run whole)
ATTENTION = "self_attn"

#: (decoder layer index, the tuned block's keyword arguments, that layer's input)
#: -> the keyword arguments for that layer (e.g. its own attention mask)
KwargsFor = Callable[[int, dict[str, Any], torch.Tensor], dict[str, Any]]


_CACHE_KWARGS = frozenset(
    {"past_key_values", "past_key_value", "cache_params", "use_cache"}
)


class _ReachedRouter(Exception):
    """Raised by the router hook to stop the forward pass at the router."""


def attention_module(layer: nn.Module) -> nn.Module | None:
    """The layer's attention (``self_attn``), or None when it has none."""
    module = getattr(layer, ATTENTION, None)
    return module if isinstance(module, nn.Module) else None


@contextmanager
def _attention_outputs(
    layers: Sequence[nn.Module],
    record: list[torch.Tensor | None] | None,
    frozen: Sequence[torch.Tensor | None] | None,
) -> Iterator[None]:
    """While active: ``record`` gets each layer's attention output (None for a
    layer without one), or each layer's attention returns its ``frozen`` entry
    (where not None) without running. AutoRound's and transformers' attention
    modules return ``(output, weights)``; the frozen one returns ``(output,
    None)``."""
    undo: list[Callable[[], None]] = []
    try:
        for i, layer in enumerate(layers):
            attn = attention_module(layer)
            if record is not None:
                record.append(None)
                if attn is not None:

                    def hook(_m: nn.Module, _a: Any, out: Any, i: int = i) -> None:
                        value = out[0] if isinstance(out, (tuple, list)) else out
                        record[i] = value.detach()

                    undo.append(attn.register_forward_hook(hook).remove)
            if frozen is not None and attn is not None and frozen[i] is not None:
                value = frozen[i]

                def forward(
                    *a: Any, _v: torch.Tensor = value, _i: int = i, **k: Any
                ) -> Any:
                    x = a[0] if a else k.get("hidden_states")
                    if isinstance(x, torch.Tensor) and x.shape != _v.shape:
                        raise ValueError(
                            f"look-ahead: the frozen attention output of path layer "
                            f"{_i} is {tuple(_v.shape)}, its input {tuple(x.shape)}"
                        )
                    return _v, None

                attn.forward = forward  # instance attribute: shadows the method
                undo.append(lambda attn=attn: delattr(attn, "forward"))
        yield
    finally:
        for fn in reversed(undo):
            fn()


class LookaheadPath:
    """The layers from just after a tuned block up to (and including) the decoder
    layer that holds the next MoE router ``site``.

    Every layer gets the tuned block's keyword arguments, unless ``kwargs_for`` is
    set: layers of another type may need their own (hybrid and alternating
    sliding-window models build one attention mask per layer type).
    """

    def __init__(self, layers: Sequence[nn.Module], site: RouterSite) -> None:
        if not layers:
            raise ValueError("a look-ahead path needs at least the router's layer")
        self.layers = list(layers)
        self.site = site
        self.kwargs_for: KwargsFor | None = None

    @property
    def first_layer(self) -> int:
        """Decoder layer index of ``layers[0]``."""
        return self.site.layer - len(self.layers) + 1

    @property
    def attention_layers(self) -> list[int]:
        """Decoder indices of the path's layers that have an attention to freeze."""
        return [
            self.first_layer + i
            for i, layer in enumerate(self.layers)
            if attention_module(layer) is not None
        ]

    def __call__(
        self,
        hidden: torch.Tensor,
        *,
        record_attention: list[torch.Tensor | None] | None = None,
        attention: Sequence[torch.Tensor | None] | None = None,
        **layer_kwargs: Any,
    ) -> torch.Tensor:
        return router_logits_through(
            self.layers,
            self.site,
            hidden,
            kwargs_for=self.kwargs_for,
            first_layer=self.first_layer,
            record_attention=record_attention,
            attention=attention,
            **layer_kwargs,
        )


def next_router_path(
    layers: Sequence[nn.Module], sites: Sequence[RouterSite], block_index: int
) -> LookaheadPath | None:
    """The path from decoder layer ``block_index`` to the next MoE router after it,
    or None when ``block_index`` is at or after the last MoE layer."""
    later = [s for s in sites if s.layer > block_index]
    if not later:
        return None
    nxt = min(later, key=lambda s: s.layer)
    return LookaheadPath(layers[block_index + 1 : nxt.layer + 1], nxt)


def router_logits_through(
    layers: Sequence[nn.Module],
    site: RouterSite,
    hidden: torch.Tensor,
    *,
    kwargs_for: KwargsFor | None = None,
    first_layer: int = 0,
    record_attention: list[torch.Tensor | None] | None = None,
    attention: Sequence[torch.Tensor | None] | None = None,
    **layer_kwargs: Any,
) -> torch.Tensor:
    """Run ``layers`` on ``hidden`` and return ``site``'s router logits [T, E].

    The last layer is stopped as soon as its router has run (its experts are not
    computed). Gradients flow from the logits back to ``hidden``. ``kwargs_for``
    (with ``first_layer``, the decoder index of ``layers[0]``) adapts the keyword
    arguments per layer. ``record_attention`` (an empty list) receives each
    layer's attention output; ``attention`` (one entry per layer, None: run it)
    replaces them, so no gradient flows through those attentions.
    """
    if attention is not None and len(attention) != len(layers):
        raise ValueError(
            f"look-ahead: {len(attention)} frozen attention outputs for a path of "
            f"{len(layers)} layers"
        )
    captured: dict[str, torch.Tensor] = {}
    # A KV cache would be appended to on every call (and keep old graphs alive).
    layer_kwargs = {k: v for k, v in layer_kwargs.items() if k not in _CACHE_KWARGS}

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        captured["logits"] = site.logits(output)
        raise _ReachedRouter

    handle = site.router.register_forward_hook(hook)

    def kwargs(offset: int, x: torch.Tensor) -> dict[str, Any]:
        if kwargs_for is None:
            return layer_kwargs
        return kwargs_for(first_layer + offset, layer_kwargs, x)

    try:
        with _attention_outputs(layers, record_attention, attention):
            x = hidden
            for offset, layer in enumerate(layers[:-1]):
                out = layer(x, **kwargs(offset, x))
                x = out[0] if isinstance(out, tuple) else out
            try:
                layers[-1](x, **kwargs(len(layers) - 1, x))
            except _ReachedRouter:
                pass
    finally:
        handle.remove()
    if "logits" not in captured:
        raise RuntimeError(
            f"look-ahead: the router of layer {site.layer} ({site.name}) did not run "
            "in its decoder layer's forward; the adapter points at the wrong module"
        )
    return captured["logits"]
