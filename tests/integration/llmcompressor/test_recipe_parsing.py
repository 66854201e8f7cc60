"""``VSRAQModifier`` in llm-compressor recipes: found by name, options validated
when the recipe is parsed, written back unchanged; plus contract checks on the
host seams the modifier relies on (llmcompressor 0.14.0.1)."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

RECIPE = """
quant_stage:
  quant_modifiers:
    VSRAQModifier:
      targets: [Linear]
      scheme: W4A16
      ignore: [lm_head]
      iters: {iters}
{extra}
"""


def _parse(extra: str = "", iters: int = 4):
    from llmcompressor.recipe import Recipe

    return Recipe.create_instance(RECIPE.format(extra=extra, iters=iters))


def test_recipe_names_vsraq_modifier():
    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier.config import VSRAQConfig

    recipe = _parse("      value_weight: 2.0\n      lookahead: false\n      loss: router_kl")
    (modifier,) = recipe.modifiers
    assert type(modifier) is VSRAQModifier
    assert modifier.iters == 4 and modifier.scheme == "W4A16"
    expected = VSRAQConfig(value_weight=2.0, lookahead=False, loss="router_kl")
    assert modifier.vsraq == expected


def test_an_option_the_loss_does_not_read_is_refused_at_parse():
    with pytest.raises(Exception, match="margin has no effect with loss='router_kl'"):
        _parse("      margin: 0.2\n      loss: router_kl")


def test_defaults_are_vsraq_config_defaults():
    from vsraq_modifier.config import VSRAQConfig

    (modifier,) = _parse().modifiers
    assert modifier.vsraq == VSRAQConfig()
    for name, field in VSRAQConfig.model_fields.items():
        assert type(modifier).model_fields[name].description == field.description


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("margin: -0.1", "margin"),
        ("value_weight: .inf", "value_weight"),
        ("structure_weight: .nan", "structure_weight"),
        ("temperature: 0", "temperature"),
        ("loss: l2", "loss"),
        ("value_target: weights", "value_target"),
        ("structure: hinge", "structure"),
        ("vsraq_margin: 0.1", "vsraq_margin"),
    ],
)
def test_out_of_range_rejected_at_parse(line, field):
    with pytest.raises(ValidationError) as err:
        _parse("      " + line)
    assert field in str(err.value)


def test_iters_zero_needs_the_host_loss():
    """iters=0 is AutoRound's round-to-nearest: no loss to add a routing term to."""
    with pytest.raises(ValidationError, match="loss='vsraq' with iters=0"):
        _parse(iters=0)
    with pytest.raises(ValidationError, match="iters=-1"):
        _parse("      loss: mse", iters=-1)
    (rtn,) = _parse("      loss: mse", iters=0).modifiers
    assert (rtn.iters, rtn.loss) == (0, "mse")


def test_saved_recipe_round_trips(tmp_path):
    from llmcompressor.recipe import Recipe

    from vsraq_modifier import VSRAQModifier

    original = VSRAQModifier(
        targets=["Linear"],
        scheme="W4A16",
        ignore=["lm_head"],
        iters=3,
        value_weight=0.5,
        structure="set_nll",
        temperature=0.25,
    )
    path = tmp_path / "recipe.yaml"
    Recipe.from_modifiers([original]).yaml(file_path=str(path))
    assert "VSRAQModifier" in path.read_text()
    (loaded,) = Recipe.create_instance(str(path)).modifiers
    assert type(loaded) is VSRAQModifier
    assert loaded.vsraq == original.vsraq
    assert (loaded.iters, loaded.scheme) == (3, "W4A16")


# --- contract checks on the host seams ------------------------------------------
def test_host_seams():
    """What the modifier relies on in llmcompressor/auto_round; if one of these
    fails, the host changed and modifier.py / fp_chain.py / experts.py need a look."""
    from llmcompressor.modeling.moe import context
    from llmcompressor.modifiers.autoround import base
    from llmcompressor.pipelines.sequential import pipeline

    apply_src = inspect.getsource(base.AutoRoundModifier.apply_autoround)
    hook = apply_src.index("self._update_device_map_for_dp(kwargs)")
    assert hook < apply_src.index("AutoRound(\n                model=wrapped_model,")
    assert "self._all_module_input.pop(layer_name" in apply_src
    # the pipeline keeps the full-precision chain only for this exact class name
    assert 'type(m).__name__ == "AutoRoundModifier"' in inspect.getsource(pipeline)
    assert isinstance(context._CALIBRATE_ALL_EXPERTS, bool)
