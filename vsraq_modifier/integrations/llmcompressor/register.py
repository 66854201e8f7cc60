"""Make llm-compressor recipes find ``VSRAQModifier`` by name, with no import.

llm-compressor looks modifiers up in ``ModifierFactory``, which scans only its own
packages. The post-import hook (``_vsraq_modifier_hook``) calls
:func:`on_factory_import` right after ``llmcompressor.modifiers.factory`` has run.
At that moment ``llmcompressor.modifiers`` is still half-initialised (its
``__init__`` imports the factory first), so the modifier class itself cannot be
imported yet, and importing it would also pull in auto_round for every
llm-compressor user. The factory therefore gets a lazy entry: the class module is
imported the first time a recipe names ``VSRAQModifier`` (``ModifierFactory.create``
calls the registry entry with the recipe's arguments). Importing the class module
replaces the lazy entry by the class itself (:func:`register`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["MODIFIER_NAME", "create_modifier", "on_factory_import", "register"]

#: the name recipes use
MODIFIER_NAME = "VSRAQModifier"
_MODIFIER_MODULE = "vsraq_modifier.integrations.llmcompressor.modifier"


def create_modifier(**kwargs: Any) -> Any:
    """The lazy registry entry: import the modifier module, build the modifier."""
    module = importlib.import_module(_MODIFIER_MODULE)
    return module.VSRAQModifier(**kwargs)


def on_factory_import(module: ModuleType) -> None:
    """Post-import callback for ``llmcompressor.modifiers.factory``: registers the
    lazy entry (nothing heavy is imported here)."""
    from vsraq_modifier.integrations.llmcompressor.seams import register_lazy_modifier

    register_lazy_modifier(module.ModifierFactory, MODIFIER_NAME, create_modifier)


def register(cls: type) -> None:
    """Register the modifier class itself (called when its module is imported)."""
    from llmcompressor.modifiers import ModifierFactory

    ModifierFactory.register(MODIFIER_NAME, cls)
