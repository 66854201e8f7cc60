"""llm-compressor integration: ``VSRAQModifier`` for recipes (docs/llm-compressor.md).

Importing this package does not import llm-compressor; ``VSRAQModifier`` loads on
first use. Recipes find it by name without any import (``register.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["VSRAQModifier"]

if TYPE_CHECKING:  # pragma: no cover
    from vsraq_modifier.integrations.llmcompressor.modifier import VSRAQModifier


def __getattr__(name: str) -> Any:
    if name == "VSRAQModifier":
        return importlib.import_module(f"{__name__}.modifier").VSRAQModifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
