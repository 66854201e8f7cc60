"""Router taps: what a decoder block's routers say on each of AutoRound's forwards.

The host's per-step loss sees only the block's output, so the router logits are
read with forward hooks on the block (its keyword arguments, for the look-ahead
path), on its own router(s), and after the block (the look-ahead: the next MoE
router, reached through the full-precision layers in between). One
:class:`TapRecord` per block forward; what happens to it depends on the phase
(reference capture, tuning, agreement measurement).

Host-agnostic apart from the calling convention of AutoRound's block forward
(``block(hidden_states=..., **others)``); imports only torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vsraq_modifier.lookahead import LookaheadPath
from vsraq_modifier.metrics.agreement import RoutingAccumulator
from vsraq_modifier.routers.base import RouterSite
from vsraq_modifier.routing import RouterSpec, route

__all__ = [
    "AHEAD",
    "Agreement",
    "ReferenceStore",
    "RouterTaps",
    "TapRecord",
    "compact",
]

#: key of the look-ahead router in records, stores and agreement tables
AHEAD = "ahead"


def compact(logits: torch.Tensor) -> torch.Tensor:
    """Reference logits in 2 bytes per value: 16-bit logits are kept as they are;
    float32 becomes float16 (11-bit mantissa, ample range for router logits) or
    bfloat16 where a value would overflow float16."""
    logits = logits.detach()
    if logits.element_size() <= 2:
        return logits
    if logits.abs().max() < 6.0e4:
        return logits.to(torch.float16)
    return logits.to(torch.bfloat16)


@dataclass
class TapRecord:
    """One block forward: batch shape, the block's keyword arguments, and router
    logits [batch * seq, experts] per key (own router layer index or AHEAD)."""

    shape: tuple[int, int]
    kwargs: dict[str, Any]
    logits: dict[int | str, torch.Tensor] = field(default_factory=dict)
    #: the look-ahead path's attention outputs (``RouterTaps.record_attention``)
    attention: list[torch.Tensor | None] | None = None
    #: the block's output, when the look-ahead is left to the session
    #: (``RouterTaps.defer_ahead``: it needs the samples' frozen attention)
    ahead_input: torch.Tensor | None = None


def _first_param(module: nn.Module) -> str:
    params = [p for p in inspect.signature(module.forward).parameters if p != "self"]
    return params[0] if params else "hidden_states"


class RouterTaps:
    """Hooks on one decoder layer that produce a :class:`TapRecord` per forward.

    Router modules are looked up by name when :meth:`attach` is called, so a
    router that AutoRound wrapped for quantization is still found.
    """

    def __init__(
        self,
        layer: nn.Module,
        own: Sequence[RouterSite],
        path: LookaheadPath | None,
        on_record: Callable[[TapRecord], None],
    ) -> None:
        self.layer = layer
        self.own = list(own)
        self.path = path
        self.on_record = on_record
        #: run the look-ahead path after the block (off when nobody needs it)
        self.ahead_enabled = path is not None
        #: keep the path's attention outputs in the record (reference pass)
        self.record_attention = False
        #: leave the look-ahead to the session: the record gets the block's
        #: output instead of the look-ahead logits
        self.defer_ahead = False
        self._hidden_name = _first_param(layer)
        self._record: TapRecord | None = None

    def attach(self) -> list[torch.utils.hooks.RemovableHandle]:
        handles = [
            self.layer.register_forward_pre_hook(self._pre, with_kwargs=True),
            self.layer.register_forward_hook(self._post),
        ]
        for site in self.own:
            router = self.layer.get_submodule(site.name)
            handles.append(router.register_forward_hook(self._router_hook(site)))
        return handles

    # --- hooks ---------------------------------------------------------------
    def _pre(self, _m: nn.Module, args: tuple, kwargs: dict) -> None:
        if args:
            hidden, rest = args[0], dict(kwargs)
        else:
            rest = dict(kwargs)
            hidden = rest.pop(self._hidden_name)
        self._record = TapRecord(shape=(hidden.shape[0], hidden.shape[1]), kwargs=rest)

    def _router_hook(self, site: RouterSite) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            if self._record is not None:
                self._record.logits[site.layer] = site.logits(output)

        return hook

    def _post(self, _m: nn.Module, _args: Any, output: Any) -> None:
        record, self._record = self._record, None
        if record is None:
            return
        missing = [s.name for s in self.own if s.layer not in record.logits]
        if missing:
            raise RuntimeError(
                f"vsraq: router(s) {missing} of this block did not run during its "
                "forward; the router adapter points at the wrong module"
            )
        if self.ahead_enabled and self.path is not None:
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if self.defer_ahead:
                record.ahead_input = hidden
            else:
                attention: list[torch.Tensor | None] | None = (
                    [] if self.record_attention else None
                )
                record.logits[AHEAD] = self.path(
                    hidden, record_attention=attention, **record.kwargs
                )
                record.attention = attention
        self.on_record(record)


class ReferenceStore:
    """Full-precision reference logits per calibration sample, compact (2 bytes
    per value), in the order AutoRound's reference forward visits the samples."""

    def __init__(self) -> None:
        self.samples = 0
        self._per_key: dict[int | str, list[torch.Tensor]] = {}
        #: look-ahead path layer -> its attention output per sample [seq, hidden]
        self._attention: dict[int, list[torch.Tensor]] = {}
        self._path_layers = 0

    def add(self, record: TapRecord) -> None:
        batch, seq = record.shape
        for key, logits in record.logits.items():
            per_sample = compact(logits).reshape(batch, seq, -1).unbind(0)
            self._per_key.setdefault(key, []).extend(per_sample)
        for i, out in enumerate(record.attention or []):
            if out is not None:
                per_sample = compact(out).reshape(batch, seq, -1).unbind(0)
                self._attention.setdefault(i, []).extend(per_sample)
        self._path_layers = max(self._path_layers, len(record.attention or []))
        self.samples += batch

    def attention(
        self, indices: Sequence[int], like: torch.Tensor
    ) -> list[torch.Tensor | None] | None:
        """The look-ahead path's reference attention outputs of the samples
        ``indices`` ([len(indices), seq, hidden] per path layer, in ``like``'s
        dtype and device; None for a layer without attention), or None when the
        reference pass recorded none."""
        if not self._path_layers:
            return None
        out: list[torch.Tensor | None] = []
        for i in range(self._path_layers):
            rows = self._attention.get(i)
            if rows is None:
                out.append(None)
                continue
            value = torch.stack([rows[int(j)] for j in indices])
            out.append(value.to(device=like.device, dtype=like.dtype))
        return out

    def keys(self) -> list[int | str]:
        return list(self._per_key)

    def get(self, key: int | str, indices: Sequence[int]) -> torch.Tensor:
        """float32 reference logits [len(indices) * seq, experts]."""
        rows = self._per_key[key]
        return torch.cat([rows[int(i)] for i in indices]).float()

    @property
    def nbytes(self) -> int:
        kept = [*self._per_key.values(), *self._attention.values()]
        return sum(t.numel() * t.element_size() for v in kept for t in v)

    def bytes_per_token(self) -> dict[int | str, int]:
        """Stored bytes per calibration token, per router."""
        return {
            k: v[0].shape[-1] * v[0].element_size() for k, v in self._per_key.items()
        }


class Agreement:
    """Routing agreement of a block's routers with the reference, with the project's
    metric definitions (:mod:`vsraq_modifier.metrics.agreement`), keyed by the
    router's decoder layer index."""

    def __init__(self) -> None:
        self.metrics = RoutingAccumulator()

    @torch.no_grad()
    def update(
        self,
        layer: int,
        logits: torch.Tensor,
        ref: torch.Tensor,
        spec: RouterSpec,
        mask: torch.Tensor | None,
    ) -> None:
        reference = route(ref.to(logits.device).float(), spec)
        self.metrics.update(layer, reference, route(logits.detach(), spec), mask)

    def exact_match(self) -> dict[int, float]:
        """Fraction of valid tokens whose top-k expert set equals the reference's."""
        return {m.layer: m.exact_match for m in self.metrics.result()}
