"""Bad input not covered by the other issues' tests (docs/errors.md lists every
error and the test that covers it): options of the wrong type on all three
surfaces, k larger than the number of experts, a router output the adapter does
not read, a dense model given to ``VSRAQModifier``, and a recipe naming
``VSRAQModifier`` where the import hook did not run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from vsraq_modifier.routers import find_routers
from vsraq_modifier.routers.base import UnrecognisedRouterOutputError
from vsraq_modifier.testing import tiny_model

#: option -> a value of the wrong type
WRONG_TYPES = {"margin": "abc", "value_weight": "heavy", "lookahead": "maybe"}


@pytest.mark.parametrize(("option", "value"), WRONG_TYPES.items())
def test_wrong_type_in_the_python_api(option, value):
    from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig
    from vsraq_modifier.integrations.autoround.config import VSRAQOptionError

    with pytest.raises(VSRAQOptionError, match=f"{option}={value!r}"):
        VSRAQSignRoundConfig(**{option: value})


@pytest.mark.parametrize(
    ("flag", "value"), [("--vsraq_margin", "abc"), ("--vsraq_temperature", "warm")]
)
def test_wrong_type_on_the_command_line_exits_2(flag, value, capsys):
    from vsraq_modifier.integrations.autoround.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--model", "unused", "--loss", "vsraq", flag, value])
    assert e.value.code == 2
    assert f"{flag}: invalid float value: '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), WRONG_TYPES.items())
def test_wrong_type_in_a_recipe(option, value):
    from llmcompressor.recipe import Recipe
    from pydantic import ValidationError

    recipe = textwrap.dedent(
        f"""
        quant_stage:
          quant_modifiers:
            VSRAQModifier:
              targets: [Linear]
              scheme: W4A16
              iters: 2
              {option}: {value}
        """
    )
    with pytest.raises(ValidationError) as err:
        Recipe.create_instance(recipe)
    assert option in str(err.value) and value in str(err.value)


def test_top_k_larger_than_the_experts_is_named():
    model = tiny_model("qwen3_moe", num_experts=4, num_experts_per_tok=6)
    with pytest.raises(ValueError, match=r"top_k=6 must be in 1..num_experts=4"):
        find_routers(model)


def test_router_output_the_adapter_does_not_read():
    site = find_routers(tiny_model("qwen3_moe"))[0]
    for output in (torch.zeros(5, 9), ("not", "logits"), None):
        with pytest.raises(UnrecognisedRouterOutputError, match="qwen3_moe.py"):
            site.logits(output)


def test_dense_model_refused_by_vsraq_modifier(tmp_path):
    """VSRAQModifier checks for routers when oneshot initialises it, before any
    calibration (AutoRound's side: tests/integration/autoround)."""
    from tests.helpers.llmcompressor import load, run_oneshot, tiny_tokenizer
    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier.routers import UnsupportedModelError
    from vsraq_modifier.testing import tiny_dense_model

    dense = tiny_dense_model(vocab_size=64)
    dense.save_pretrained(tmp_path / "dense")  # oneshot reads the config back
    tiny_tokenizer(64).save_pretrained(tmp_path / "dense")
    ids = torch.randint(2, 64, (2, 16))
    modifier = VSRAQModifier(targets=["Linear"], scheme="W4A16", iters=2)
    with pytest.raises(UnsupportedModelError, match="no router adapter.*qwen3_moe"):
        run_oneshot(load(tmp_path / "dense"), modifier, ids)


HOOKLESS = textwrap.dedent(
    """
    from llmcompressor.recipe import Recipe
    RECIPE = '''
    quant_stage:
      quant_modifiers:
        VSRAQModifier:
          targets: [Linear]
          scheme: W4A16
          iters: 2
    '''
    try:
        Recipe.create_instance(RECIPE)
    except ValueError as e:
        print("USER SEES:", e)
    import vsraq_modifier.integrations.llmcompressor.modifier  # the fix
    (modifier,) = Recipe.create_instance(RECIPE).modifiers
    print("AFTER IMPORT:", type(modifier).__name__)
    """
)


def test_recipe_without_the_import_hook():
    """What a user sees when the .pth hook did not run (VSRAQ_DISABLE_HOOK=1, an
    environment that skips .pth files), and the documented fix."""
    run = subprocess.run(
        [sys.executable, "-c", HOOKLESS],
        capture_output=True,
        text=True,
        env={**os.environ, "VSRAQ_DISABLE_HOOK": "1"},
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "USER SEES: No modifier of type 'VSRAQModifier' found." in run.stdout
    assert "AFTER IMPORT: VSRAQModifier" in run.stdout


def test_auto_round_without_the_import_hook():
    """``auto-round --loss`` needs the hook; without it argparse refuses the flag
    (exit 2). The fix: ``python -m vsraq_modifier.autoround`` (tested with the
    hook off in tests/integration/autoround/test_autoround_cli.py)."""
    auto_round = os.path.join(os.path.dirname(sys.executable), "auto-round")
    run = subprocess.run(
        [auto_round, "--model", "unused", "--loss", "vsraq"],
        capture_output=True,
        text=True,
        env={**os.environ, "VSRAQ_DISABLE_HOOK": "1"},
        timeout=180,
    )
    assert run.returncode == 2
    assert "unrecognized arguments: --loss" in run.stderr
