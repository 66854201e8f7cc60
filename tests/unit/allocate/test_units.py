"""Units of allocation on tiny models of every family."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from vsraq_modifier.allocate.units import FAMILY_IGNORE, find_units, ignored_linears
from vsraq_modifier.routers import find_routers
from vsraq_modifier.testing import TINY_FAMILIES, tiny_model

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def model(request):
    return tiny_model(request.param)


def _host_expert_names(unit_prefix: str, param: str, experts: int) -> list[str]:
    projs = ["gate_proj", "up_proj"] if param == "gate_up_proj" else [param]
    return [f"{unit_prefix}.{e}.{p}" for e in range(experts) for p in projs]


def test_layer_units_cover_every_quantizable_weight_once(model):
    units = find_units(model, "layer")
    sites = find_routers(model)
    expert_units = [u for u in units if u.kind == "experts"]
    assert sorted(u.layer for u in expert_units) == [s.layer for s in sites]
    covered = sum(u.numel for u in units)
    layers = model.get_decoder().layers if hasattr(model, "get_decoder") else None
    assert layers is not None
    kept = set(ignored_linears(model))
    expected = 0
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and ".layers." in name
            and name not in kept
        ):
            expected += module.weight.numel()
    for s in sites:
        expected += sum(
            p.numel() for p in s.block.experts.parameters(recurse=False) if p.dim() == 3
        )
    assert covered == expected
    assert len({u.name for u in units}) == len(units)


def test_patterns_match_the_hosts_module_names(model):
    units = find_units(model, "layer")
    linear_names = [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    ]
    for u in units:
        pat = re.compile(u.patterns[0])
        if u.kind == "experts":
            prefix = u.parts[0].param.rsplit(".", 1)[0]
            experts = model.get_parameter(u.parts[0].param).shape[0]
            names = [
                n
                for param in {p.param.rsplit(".", 1)[1] for p in u.parts}
                for n in _host_expert_names(prefix, param, experts)
            ]
            # every host expert linear of this layer, and none of another layer
            assert all(pat.match(n) for n in names)
            other = prefix.replace(f".{u.layer}.", f".{u.layer + 10}.")
            assert not pat.match(f"{other}.0.down_proj")
        else:
            matched = [n for n in linear_names if pat.match(n)]
            assert sorted(matched) == sorted(
                p.param.removesuffix(".weight") for p in u.parts
            )


def test_expert_mode_splits_each_moe_layer(model):
    layer_units = find_units(model, "layer")
    units = find_units(model, "expert")
    for s in find_routers(model):
        own = [u for u in units if u.kind == "expert" and u.layer == s.layer]
        assert [u.expert for u in own] == list(range(s.spec.num_experts))
        whole = next(
            u for u in layer_units if u.kind == "experts" and u.layer == s.layer
        )
        assert sum(u.numel for u in own) == whole.numel
        prefix = whole.parts[0].param.rsplit(".", 1)[0]
        assert re.match(own[1].patterns[0], f"{prefix}.1.down_proj")
        assert not re.match(own[1].patterns[0], f"{prefix}.0.down_proj")
        assert not re.match(own[1].patterns[0], f"{prefix}.10.down_proj")


def test_gpt_oss_experts_are_read_transposed():
    m = tiny_model("gpt_oss")
    u = next(u for u in find_units(m) if u.kind == "experts")
    down = next(p for p in u.parts if p.kind == "down_proj")
    # GptOssExperts.down_proj is [E, intermediate, hidden]: in = intermediate
    assert down.transposed and (down.in_features, down.out_features) == (
        m.config.intermediate_size,
        m.config.hidden_size,
    )


def test_ignore_table_is_the_recipes_ignore_lists():
    for family, patterns in FAMILY_IGNORE.items():
        recipe = yaml.safe_load((RECIPES / f"{family}_w4a16.yaml").read_text())
        (args,) = recipe["quant_stage"]["quant_modifiers"].values()
        assert tuple(args["ignore"]) == patterns, family


def test_kept_linears_are_routers_and_ignored_gates():
    m = tiny_model("qwen2_moe")
    kept = ignored_linears(m)
    assert kept and all(n.endswith("shared_expert_gate") for n in kept)
