"""Per-architecture router adapters (one module per family) and their registry."""

from vsraq_modifier.routers.base import RouterAdapter, RouterSite
from vsraq_modifier.routers.registry import (
    UnsupportedModelError,
    adapter_for,
    find_routers,
    register_adapter,
    supported_families,
)

__all__ = [
    "RouterAdapter",
    "RouterSite",
    "UnsupportedModelError",
    "adapter_for",
    "find_routers",
    "register_adapter",
    "supported_families",
]
