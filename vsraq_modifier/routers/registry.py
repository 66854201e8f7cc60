"""Registry of router adapters, keyed by family name.

Each family lives in its own module of ``vsraq_modifier.routers``; the registry
imports every such module on first use, so adding a family is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from torch import nn

from vsraq_modifier.routers.base import RouterAdapter, RouterSite, text_config

__all__ = [
    "UnsupportedModelError",
    "register_adapter",
    "adapter_for",
    "find_routers",
    "supported_families",
]

_ADAPTERS: dict[str, type[RouterAdapter]] = {}
_NOT_FAMILIES = {"base", "registry"}
_loaded = False


class UnsupportedModelError(ValueError):
    """The model has no MoE router that an adapter recognises."""


def register_adapter(cls: type[RouterAdapter]) -> type[RouterAdapter]:
    """Class decorator: make an adapter findable by its ``model_types``."""
    if cls.family in _ADAPTERS and _ADAPTERS[cls.family] is not cls:
        raise ValueError(f"router adapter family {cls.family!r} registered twice")
    _ADAPTERS[cls.family] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    # this module's own folder is the package (no import of the package itself)
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in _NOT_FAMILIES and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    _loaded = True


def supported_families() -> dict[str, tuple[str, ...]]:
    """family -> config.model_type values it handles."""
    _load_all()
    return {name: cls.model_types for name, cls in sorted(_ADAPTERS.items())}


def _unsupported(model: Any, why: str) -> UnsupportedModelError:
    families = ", ".join(
        f"{f} ({'/'.join(t)})" for f, t in supported_families().items()
    )
    return UnsupportedModelError(
        f"{type(model).__name__}: {why}. Supported MoE families: {families}. "
        "To add one, write vsraq_modifier/routers/<family>.py with a "
        "@register_adapter RouterAdapter subclass (docs/architectures.md)."
    )


def adapter_for(model: nn.Module) -> RouterAdapter:
    """The adapter for ``model``, chosen by ``config.model_type``."""
    _load_all()
    config = getattr(model, "config", None)
    model_type = getattr(text_config(config), "model_type", None) if config else None
    for cls in _ADAPTERS.values():
        if model_type in cls.model_types:
            return cls()
    raise _unsupported(model, f"model_type {model_type!r} has no router adapter")


def find_routers(model: nn.Module) -> list[RouterSite]:
    """All MoE routers of ``model``; raises :class:`UnsupportedModelError` when the
    model has none (a dense model, or a family without an adapter)."""
    adapter = adapter_for(model)
    sites = adapter.find_routers(model)
    if not sites:
        raise _unsupported(
            model,
            f"no MoE router found in any decoder layer (the {adapter.family} adapter "
            "looked for "
            f"{'/'.join(adapter.block_attrs)}.{adapter.router_attr}); is this a dense "
            "model?",
        )
    return sites
