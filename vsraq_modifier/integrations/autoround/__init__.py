"""AutoRound integration: ``auto-round --loss vsraq`` and the Python API.

- ``VSRAQSignRoundConfig``: pass as ``AutoRound(..., alg_configs=...)``.
- ``autoround(model, tokenizer, ...)``: builds that AutoRound run with every option
  checked (nothing dropped with only a warning).
- ``VSRAQQuantizer``: the SignRound subclass that adds the routing objective.

Importing this package does not import auto_round; the names load on first use.
See docs/autoround.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["VSRAQQuantizer", "VSRAQSignRoundConfig", "autoround", "ensure_registered"]

if TYPE_CHECKING:  # pragma: no cover
    from vsraq_modifier.integrations.autoround.api import autoround
    from vsraq_modifier.integrations.autoround.config import VSRAQSignRoundConfig
    from vsraq_modifier.integrations.autoround.quantizer import (
        VSRAQQuantizer,
        ensure_registered,
    )

# every name loads through the quantizer module, which registers the quantizer
# for the config with AutoRound
_LAZY = {
    "VSRAQQuantizer": "quantizer",
    "VSRAQSignRoundConfig": "quantizer",
    "autoround": "api",
    "ensure_registered": "quantizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
