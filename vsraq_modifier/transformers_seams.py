"""The private parts of transformers that the project's core relies on.

The only file of the package that reads a private transformers name; each seam is a
named function, and tests/unit/test_transformers_seams.py checks that transformers
still offers what it uses (checked against transformers 5.17.0; docs/architecture.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["attention_implementation", "conversion_mapping_restored"]


def attention_implementation(config: Any) -> str | None:
    """The attention kernel a model config selects ("eager", "sdpa", ...).

    transformers keeps it in the private ``_attn_implementation`` (the public
    ``attn_implementation`` is only the value asked for at load time); the
    sequential pipeline of llm-compressor patches the private one."""
    return getattr(config, "_attn_implementation", None)


@contextlib.contextmanager
def conversion_mapping_restored() -> Iterator[None]:
    """Restore transformers' checkpoint conversion mapping table afterwards.

    A load may edit it (AutoRound's ``disable_moe_conversion_mapping`` patches the
    getter and its private cache); a checkpoint loaded after that would be renamed
    wrong. Loading inside this block leaves the table as it was."""
    try:
        from transformers import conversion_mapping as cm
        from transformers import modeling_utils as mu
    except ImportError:  # pragma: no cover - older transformers have no such table
        yield
        return
    cm.get_checkpoint_conversion_mapping("llama")  # builds the table if not yet built
    getters = (
        cm.get_checkpoint_conversion_mapping,
        getattr(mu, "get_checkpoint_conversion_mapping", None),
    )
    cache = getattr(cm, "_checkpoint_conversion_mapping_cache", None)
    saved = dict(cache) if isinstance(cache, dict) else None
    users = set(getattr(cm, "USER_REGISTERED_MAPPINGS", ()))
    try:
        yield
    finally:
        cm.get_checkpoint_conversion_mapping = getters[0]
        if getters[1] is not None:
            mu.get_checkpoint_conversion_mapping = getters[1]
        if saved is not None and isinstance(
            cm._checkpoint_conversion_mapping_cache, dict
        ):
            cm._checkpoint_conversion_mapping_cache.clear()
            cm._checkpoint_conversion_mapping_cache.update(saved)
        if hasattr(cm, "USER_REGISTERED_MAPPINGS"):
            cm.USER_REGISTERED_MAPPINGS.clear()
            cm.USER_REGISTERED_MAPPINGS.update(users)
