"""The files both hosts read, from one allocation of a tiny Qwen2-MoE (attention,
routed experts, shared expert, a dense layer)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
import yaml

from vsraq_modifier.allocate.outputs import (
    MODIFIERS,
    allocation_json,
    format_table,
    layer_config,
    recipe,
    serving_notes,
    write_outputs,
)
from vsraq_modifier.allocate.pipeline import allocate
from vsraq_modifier.allocate.schemes import parse_schemes
from vsraq_modifier.testing import tiny_model


def _record(mode: str = "layer", bits: float = 3.2):
    model = tiny_model("qwen2_moe")
    g = torch.Generator().manual_seed(0)
    chunks = {n: [torch.randint(3, 128, (16,), generator=g)] for n in ("code", "prose")}
    return model, allocate(
        model,
        chunks,
        {"code": 16, "prose": 160},
        mode=mode,
        schemes=parse_schemes("W2A16G32,W4A16@32"),
        avg_bits=bits,
        progress=False,
    )


@pytest.fixture(scope="module")
def rec():
    return _record()[1]


def _host_linears(model) -> list[str]:
    """The linears the hosts quantize, experts unfused as experts.<e>.<proj>."""
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "shared_expert_gate" not in n
    ]
    for i, layer in enumerate(model.model.layers):
        if hasattr(layer.mlp, "experts"):
            names += [
                f"model.layers.{i}.mlp.experts.{e}.{p}"
                for e in range(model.config.num_experts)
                for p in ("gate_proj", "up_proj", "down_proj")
            ]
    return [n for n in names if n != "lm_head"]


def test_layer_config_is_what_autoround_matches(rec):
    from auto_round.utils import parse_layer_config_arg
    from auto_round.utils.common import to_standard_regex

    model = tiny_model("qwen2_moe")
    lc = layer_config(rec)
    text = json.dumps(lc, indent=1)
    assert (
        parse_layer_config_arg(text) == lc
    )  # what `--layer_config "$(cat ...)"` gives
    by_unit = {u.name: rec.schemes[c] for u, c in zip(rec.units, rec.choice)}
    for name in _host_linears(model):
        hits = [k for k in lc if re.search(to_standard_regex(k), name)]
        assert len(hits) == 1, (name, hits)  # each linear, exactly one entry
        unit = next(u for u in rec.units if any(re.match(p, name) for p in u.patterns))
        assert lc[hits[0]]["bits"] == by_unit[unit.name].bits
    gate = "model.layers.0.mlp.shared_expert_gate"
    (key,) = [k for k in lc if re.search(to_standard_regex(k), gate)]
    assert lc[key]["bits"] == 16  # kept in full precision, as the recipes do


@pytest.mark.parametrize("modifier", list(MODIFIERS))
def test_recipe_one_group_per_scheme(rec, modifier):
    r = recipe(rec, modifier)
    ((name, args),) = r["quant_stage"]["quant_modifiers"].items()
    assert name == modifier
    groups = args["config_groups"]
    used = {rec.schemes[c].label for c in rec.choice}
    assert len(groups) == len(used)
    bits = sorted(g["weights"]["num_bits"] for g in groups.values())
    assert bits == sorted(s.bits for s in rec.schemes if s.label in used)
    for g in groups.values():
        assert all(t.startswith("re:") for t in g["targets"])
        assert g["weights"]["strategy"] == "group" and g["weights"]["group_size"] == 32
    assert "re:.*mlp.shared_expert_gate$" in args["ignore"]
    with pytest.raises(ValueError, match="--modifier"):
        recipe(rec, "SparseGPTModifier")


def test_recipe_loads_in_llmcompressor(rec, tmp_path):
    from llmcompressor.recipe import Recipe

    write_outputs(rec, tmp_path, "GPTQModifier")
    loaded = Recipe.create_instance(str(tmp_path / "recipe.yaml"))
    assert loaded is not None


def test_allocation_json_keys(rec, tmp_path):
    paths = write_outputs(rec, tmp_path, "VSRAQModifier")
    assert [p.name for p in paths] == [
        "recipe.yaml",
        "layer_config.json",
        "allocation.json",
        "allocation.png",
    ]
    assert (tmp_path / "allocation.png").stat().st_size > 1000
    data = json.loads((tmp_path / "allocation.json").read_text())
    assert data == json.loads(json.dumps(allocation_json(rec)))
    assert list(data)[:4] == ["average_bits", "budget", "domains", "units"]
    assert data["domains"] == ["code", "prose"] and data["budget"] == 3.2
    assert (
        data["average_bits"] == pytest.approx(rec.average_bits)
        and data["average_bits"] <= 3.2
    )
    kinds = {u["kind"] for u in data["units"]}
    assert kinds == {"attention", "experts", "shared", "dense_mlp"}
    for u in data["units"]:
        assert set(u["sensitivity"]) == {"code", "prose"}
        assert u["scheme"] in data["schemes"] and u["bits"] > 2
        if u["kind"] == "experts":
            assert len(u["usage"]["prose"]) == 8
        else:
            assert u["usage"] is None
    yaml.safe_load((tmp_path / "recipe.yaml").read_text())


def test_serving_notes_and_table():
    _, low = _record(bits=2.6)
    notes = serving_notes(low)
    assert any("int2 experts need vLLM's optional int2 MoE kernel" in n for n in notes)
    assert "average bits" in format_table(low)
    _, per_expert = _record(mode="expert", bits=3.5)
    assert "not servable by vLLM's fused MoE" in serving_notes(per_expert)[0]


def test_serving_notes_name_the_transformers_reload_limit(rec):
    """Experts of two MoE layers with two schemes: transformers 5.17 reads all
    experts of a compressed-tensors checkpoint with one scheme; one expert scheme
    and another elsewhere: AutoRound's export may not reload; one scheme
    everywhere: no note (tests/integration/test_allocate_export.py)."""
    experts = [i for i, u in enumerate(rec.units) if u.kind == "experts"]
    assert len(experts) == 2
    same = list(rec.choice)
    for i in experts:
        same[i] = 0
    mixed = list(same)
    mixed[experts[1]] = 1
    limit = "transformers 5.17 does not reload a compressed-tensors checkpoint"
    first = "AutoRound's llm_compressor export may not reload in transformers"
    uniform = serving_notes(replace(rec, choice=[0] * len(rec.units)))
    assert not any("transformers" in n for n in uniform)
    one = serving_notes(replace(rec, choice=[1 - c for c in same]))  # + attention
    assert any(first in n for n in one) and not any(limit in n for n in one)
    two = serving_notes(replace(rec, choice=mixed))
    assert any(limit in n for n in two) and not any(first in n for n in two)
