"""vsraq-modifier: keep an MoE model's expert choices intact when it is quantized.

Importing this package is cheap: the host frameworks (llmcompressor, auto_round) are
imported only when their glue is used. ``VSRAQModifier`` is resolved lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["VSRAQConfig", "VSRAQModifier", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from vsraq_modifier.config import VSRAQConfig
    from vsraq_modifier.integrations.llmcompressor.modifier import VSRAQModifier

_LAZY = {
    "VSRAQConfig": "vsraq_modifier.config",
    "VSRAQModifier": "vsraq_modifier.integrations.llmcompressor.modifier",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vsraq_modifier' has no attribute {name!r}")
