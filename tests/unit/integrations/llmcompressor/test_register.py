"""Recipes find ``VSRAQModifier`` by name: the lazy entry builds the modifier with
the recipe's arguments, and the factory creates it like any registered modifier."""

from __future__ import annotations

from vsraq_modifier.integrations.llmcompressor.register import (
    MODIFIER_NAME,
    create_modifier,
)


def test_the_lazy_entry_builds_the_modifier() -> None:
    modifier = create_modifier(scheme="W4A16", targets=["Linear"], margin=0.2)
    assert type(modifier).__name__ == MODIFIER_NAME == "VSRAQModifier"
    assert modifier.vsraq.margin == 0.2


def test_the_factory_creates_it_by_name() -> None:
    from llmcompressor.modifiers import ModifierFactory

    from vsraq_modifier.integrations.llmcompressor.modifier import VSRAQModifier

    ModifierFactory.refresh()
    made = ModifierFactory.create(
        MODIFIER_NAME,
        allow_registered=True,
        allow_experimental=False,
        scheme="W4A16",
        targets=["Linear"],
        loss="mse",
    )
    assert isinstance(made, VSRAQModifier) and made.vsraq.loss == "mse"
