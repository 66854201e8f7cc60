"""Schemes and export: ``VSRAQModifier`` through ``oneshot`` at W4A16, W3A16, NVFP4
and MXFP4 on a tiny Qwen3-MoE, ``save_compressed``, and back.

- W4A16/W3A16 (pack-quantized) reload in transformers in float32 and give the
  in-memory quantized model's logits.
- NVFP4/MXFP4 decompress to bfloat16 and their experts lose activation
  quantization in transformers (fused experts are not linears); what is checked
  is that every expert weight decompresses to the in-memory quantized weight,
  via ``reload.load_compressed`` (compressed-tensors' decompressor, global scales
  included), and that logits are finite and near the in-memory ones.
- NVFP4: plain transformers 5.17 drops the experts' global scales (the trap
  ``load_compressed`` works around): shown here, so the workaround stays needed.
- The saved recipe.yaml loads in a fresh process with no vsraq import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.helpers.llmcompressor import (
    load,
    modifier_args,
    run_oneshot,
    tiny_checkpoint,
    token_ids,
)

pytestmark = pytest.mark.slow

FORMATS = {
    "W4A16": "pack-quantized",
    "W3A16": "pack-quantized",
    "NVFP4": "nvfp4-pack-quantized",
    "MXFP4": "mxfp4-pack-quantized",
}


def _expert_weights(model) -> dict[str, torch.Tensor]:
    return {
        name: module.weight.detach().clone()
        for name, module in model.named_modules()
        if ".experts." in name and isinstance(module, torch.nn.Linear)
    }


def _fused_expert_weight(model, name: str) -> torch.Tensor:
    """The weight of linear expert ``name`` (``...experts.3.down_proj``) inside a
    transformers model's fused experts (Qwen3-MoE layout)."""
    prefix, index, proj = name.rsplit(".", 2)
    fused = model.get_submodule(prefix)
    if proj == "down_proj":
        return fused.down_proj[int(index)]
    gate, up = fused.gate_up_proj[int(index)].chunk(2, dim=0)
    return gate if proj == "gate_proj" else up


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    """scheme -> (export dir, in-memory logits, in-memory expert weights, ids)."""
    from vsraq_modifier import VSRAQModifier

    cache = {}

    def export(scheme: str):
        if scheme not in cache:
            model = load(tiny_checkpoint("qwen3_moe", checkpoints))
            ids = token_ids(model.config.vocab_size, n=2)
            run_oneshot(model, VSRAQModifier(**modifier_args(scheme)), ids)
            with torch.no_grad():
                logits = model(ids).logits
            weights = _expert_weights(model)
            out = tmp_path_factory.mktemp(scheme)
            model.save_pretrained(out, save_compressed=True)
            cache[scheme] = (out, logits, weights, ids)
        return cache[scheme]

    return export


@pytest.mark.parametrize("scheme", list(FORMATS))
def test_export_and_reload(scheme, exported):
    from transformers import AutoModelForCausalLM

    from vsraq_modifier.integrations.llmcompressor.reload import load_compressed

    out, logits, weights, ids = exported(scheme)
    assert torch.isfinite(logits).all()
    qconfig = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qconfig["format"] == FORMATS[scheme]
    assert "lm_head" in qconfig["ignore"]
    assert {f"model.layers.{i}.mlp.gate" for i in range(3)} <= set(qconfig["ignore"])
    assert "VSRAQModifier:" in (out / "recipe.yaml").read_text()

    if scheme in ("W4A16", "W3A16"):
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        with torch.no_grad():
            got = model(ids).logits
        torch.testing.assert_close(got, logits, atol=1e-4, rtol=1e-4)
        return

    model = load_compressed(out, dtype=torch.bfloat16)
    for name, weight in weights.items():
        err = float((_fused_expert_weight(model, name).float() - weight).abs().max())
        # bfloat16 keeps 8 significant bits: two units in the last place at most
        assert err <= weight.abs().max() / 128, (name, err)
    with torch.no_grad():
        got = model(ids).logits.float()
    assert torch.isfinite(got).all()
    # experts run without their 4-bit activation quantization here
    assert (got - logits).abs().max() < 0.25 * logits.abs().max()


def test_nvfp4_plain_transformers_reload_drops_expert_global_scales(exported):
    """The trap: transformers 5.17 leaves the experts' global scales unused."""
    from transformers import AutoModelForCausalLM

    out, _, weights, _ = exported("NVFP4")
    model, info = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.bfloat16, output_loading_info=True
    )
    assert any(k.endswith("weight_global_scale") for k in info["unexpected_keys"])
    name = "model.layers.0.mlp.experts.0.down_proj"
    err = float((_fused_expert_weight(model, name).float() - weights[name]).abs().max())
    assert err > 10 * float(weights[name].abs().max()), err


def test_saved_recipe_loads_in_a_fresh_process(exported):
    """No vsraq import: the post-import hook registers the name lazily, and the
    modifier module is imported only when the recipe names it."""
    out, *_ = exported("W4A16")
    code = textwrap.dedent(
        f"""
        import sys
        from llmcompressor.modifiers import ModifierFactory
        from llmcompressor.recipe import Recipe
        module = "vsraq_modifier.integrations.llmcompressor.modifier"
        assert "VSRAQModifier" in ModifierFactory._registered_registry
        assert module not in sys.modules, "registration imported the modifier"
        (modifier,) = Recipe.create_instance({str(out / "recipe.yaml")!r}).modifiers
        assert type(modifier).__name__ == "VSRAQModifier", type(modifier)
        assert module in sys.modules
        print("LOADED", modifier.loss, modifier.iters)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "VSRAQ_DISABLE_HOOK"}
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LOADED vsraq 2" in run.stdout
