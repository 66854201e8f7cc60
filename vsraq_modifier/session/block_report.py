"""The per-block summary the VSRAQ quantizer logs (and keeps, for tests and tools)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BlockReport"]


def _num(x: float) -> str:
    return (
        "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"
    )


@dataclass
class BlockReport:
    """One tuned decoder layer.

    ``host``: AutoRound's loss summed over the first / last tuning iteration;
    ``terms_first`` / ``terms_last``: the routing objective's raw terms
    (``BlockObjective.first`` / ``.last``); ``agreement_*``: fraction of valid
    calibration tokens whose top-k expert set equals the full-precision one, per
    router (``"L<i>"`` own router of layer i, ``"L<j> (look-ahead)"``), measured
    with the block's initial rounding (before) and its final weights (after).
    """

    layer: int
    loss: str
    iters: int = 0
    host_first: float = float("nan")
    host_last: float = float("nan")
    terms_first: dict[str, float] = field(default_factory=dict)
    terms_last: dict[str, float] = field(default_factory=dict)
    agreement_before: dict[str, float] = field(default_factory=dict)
    agreement_after: dict[str, float] = field(default_factory=dict)
    reference_bytes: int = 0
    #: the tuning iteration the host keeps (None: no routing loss), the loss that
    #: chose it ("host": the safeguard; "total": host + routing), the host loss
    #: at it and the lowest host loss of any iteration
    kept_iter: int | None = None
    #: the step cap (max_flip_share): (factor on the routing terms, share of the
    #: host's step signs they overturn at factor 1, at the factor); None: off
    cap: tuple[float, float, float] | None = None
    kept_on: str = "host"
    host_kept: float = float("nan")
    host_best: float = float("nan")
    #: router label -> the router re-fit's outcome (fit error, held-aside
    #: agreement before -> after, kept or not); empty without re-fit
    refit: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        parts = [
            f"vsraq layer {self.layer} [{self.loss}, {self.iters} iters]: "
            f"host {_num(self.host_first)} -> {_num(self.host_last)}"
        ]
        for name in sorted(set(self.terms_first) | set(self.terms_last)):
            first = self.terms_first.get(name, float("nan"))
            last = self.terms_last.get(name, float("nan"))
            parts.append(f"{name} {_num(first)} -> {_num(last)}")
        if self.cap is not None:
            scale, before, after = self.cap
            parts.append(
                f"routing x{scale:.3g} (host signs overturned {100 * before:.1f} % "
                f"-> {100 * after:.1f} %)"
            )
        if self.kept_iter is not None:
            rise = (
                self.host_kept / self.host_best - 1.0
                if self.host_best > 0
                else float("nan")
            )
            parts.append(
                f"kept iter {self.kept_iter} on {self.kept_on} loss "
                f"(host {_num(self.host_kept)}, {100 * rise:+.1f} % over the "
                "lowest)"
            )
        agree = [
            f"{k} {_num(self.agreement_before.get(k, float('nan')))} -> "
            f"{_num(self.agreement_after.get(k, float('nan')))}"
            for k in self.agreement_after
        ]
        if agree:
            parts.append("agreement " + ", ".join(agree))
        for name, outcome in self.refit.items():
            parts.append(f"router re-fit {name}: {outcome}")
        return " | ".join(parts)
