"""Every recipe in recipes/ parses to a ``VSRAQModifier`` and runs end to end on
its family's tiny random model: its ignore patterns name real modules of that
family, and after ``oneshot`` the routers, shared-expert gates and lm_head are
unquantized while the experts are quantized.

For the tiny models only the scheme (W4A16 with groups of 16 instead of 128: the
tiny layers are 16-64 wide) and the iterations (2) are changed; everything else
is the recipe's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.llmcompressor import (
    SCHEMES,
    load,
    run_oneshot,
    tiny_checkpoint,
    token_ids,
)

pytestmark = pytest.mark.slow

#: routers and shared-expert gates, whatever their module type
GATES = re.compile(r"(\.gate|\.router|\.shared_expert_gate)$")
RECIPES = sorted((Path(__file__).parents[3] / "recipes").glob("*_w4a16.yaml"))


def _family(path: Path) -> str:
    return path.name.removesuffix("_w4a16.yaml")


def _matches(pattern: str, name: str) -> bool:
    return (
        bool(re.match(pattern[3:], name))
        if pattern.startswith("re:")
        else name == pattern
    )


def _quantized(module: torch.nn.Module) -> bool:
    return getattr(module, "quantization_scheme", None) is not None


def test_every_family_has_a_recipe():
    from vsraq_modifier.testing import TINY_FAMILIES

    assert sorted(_family(p) for p in RECIPES) == sorted(TINY_FAMILIES)


@pytest.mark.parametrize("path", RECIPES, ids=_family)
def test_recipe_runs_on_tiny_model(path, checkpoints):
    from llmcompressor.recipe import Recipe

    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier.routers import find_routers
    from vsraq_modifier.testing import TINY_FAMILIES

    family = _family(path)
    if family not in TINY_FAMILIES:
        pytest.skip(f"no tiny {family} model in vsraq_modifier.testing.TINY_FAMILIES")

    (as_written,) = Recipe.create_instance(str(path)).modifiers
    assert type(as_written) is VSRAQModifier and as_written.scheme == "W4A16"
    assert as_written.vsraq.is_routing_loss

    doc = yaml.safe_load(path.read_text())
    args = doc["quant_stage"]["quant_modifiers"]["VSRAQModifier"]
    ignore = args["ignore"]
    args = {k: v for k, v in args.items() if k not in ("scheme", "targets")}
    args.update(SCHEMES["W4A16"], iters=2)
    doc["quant_stage"]["quant_modifiers"]["VSRAQModifier"] = args
    recipe = Recipe.create_instance(yaml.safe_dump(doc))

    model = load(tiny_checkpoint(family, checkpoints))
    from llmcompressor.modeling.moe.linearize import linearize_moe

    linearize_moe(model)  # what oneshot does first; names as the recipe sees them
    names = [n for n, _ in model.named_modules()]
    for pattern in ignore:
        assert any(_matches(pattern, n) for n in names), (family, pattern)
    # the recipe itself keeps every linear router/gate and lm_head out (AutoRound
    # also skips some gates on its own; the served config must not rely on that)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (
            GATES.search(name) or name == "lm_head"
        ):
            assert any(_matches(p, name) for p in ignore), (family, name)

    ids = token_ids(model.config.vocab_size, n=2)
    run_oneshot(model, recipe, ids)

    modules = dict(model.named_modules())
    for site in find_routers(model):
        assert not _quantized(site.router), (family, site.layer)
    for name, module in modules.items():
        if any(_matches(p, name) for p in ignore) or GATES.search(name):
            assert not _quantized(module), (family, name)
    assert not _quantized(modules["lm_head"])
    experts = [
        m for n, m in modules.items() if re.search(r"experts\.\d+\.\w+_proj$", n)
    ]
    assert experts and all(_quantized(m) for m in experts), family
    assert all(hasattr(m, "weight_scale") for m in experts), family
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
