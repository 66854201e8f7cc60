"""Per-block state of the VSRAQ quantizer: from a decoder layer's reference forward
(router logits stored) through tuning (router logits of each forward) to its log
line (agreement before / after)."""

from __future__ import annotations

from typing import Any

from torch import nn

from vsraq_modifier.integrations.autoround.taps import (
    AHEAD,
    Agreement,
    ReferenceStore,
    RouterTaps,
    TapRecord,
)
from vsraq_modifier.lookahead import LookaheadPath
from vsraq_modifier.routers.base import RouterSite
from vsraq_modifier.routing import RouterSpec

__all__ = ["BlockRun", "floats"]


def floats(terms: dict | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (terms or {}).items()}


class BlockRun:
    """State of one decoder layer from its reference forward to its log line."""

    def __init__(
        self,
        index: int,
        layer: nn.Module,
        own: list[RouterSite],
        path: LookaheadPath | None,
    ) -> None:
        self.index, self.layer, self.own, self.path = index, layer, own, path
        self.specs: dict[int | str, RouterSpec] = {s.layer: s.spec for s in own}
        #: record key -> decoder layer of that router, and its label in the log
        self.layers: dict[int | str, int] = {s.layer: s.layer for s in own}
        self.names: dict[int, str] = {s.layer: f"L{s.layer}" for s in own}
        if path is not None:
            self.specs[AHEAD] = path.site.spec
            self.layers[AHEAD] = path.site.layer
            self.names[path.site.layer] = f"L{path.site.layer} (look-ahead)"
        self.phase = "reference"
        self.ref = ReferenceStore()
        self.taps = RouterTaps(layer, own, path, self._on_record)
        self.handles: list = []
        self.record: TapRecord | None = None
        self.inputs: Any = None
        self.others: dict = {}
        self.calls_per_iter = 1
        self.host_iters: list[float] = []
        self._calls = 0
        self.before, self.after = Agreement(), Agreement()

    def _on_record(self, record: TapRecord) -> None:
        if self.phase == "reference":
            self.ref.add(record)
        else:
            self.record = record

    def take(self) -> TapRecord:
        record, self.record = self.record, None
        if record is None:
            raise RuntimeError(
                "vsraq: no router record for this forward; the block forward "
                "bypassed the decoder layer's hooks (is torch.compile on?)"
            )
        return record

    def note_host(self, value: float) -> None:
        if self._calls % self.calls_per_iter == 0:
            self.host_iters.append(0.0)
        self.host_iters[-1] += value
        self._calls += 1

    @property
    def iteration(self) -> int:
        """The tuning iteration the next host-loss call belongs to."""
        return self._calls // self.calls_per_iter

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
