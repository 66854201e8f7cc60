"""Every family's adapter against the model's own router module (transformers
5.17): route() on the router's logits must give the router's indices and weights
bit for bit, in float32 and bfloat16, on random inputs and on exact ties."""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest
import torch

from tests.helpers.routers import assert_same_decision, randomise_router
from vsraq_modifier.routers import adapter_for, find_routers
from vsraq_modifier.testing import TINY_FAMILIES, tiny_model

#: family -> (MoE decoder layers of its tiny model, router path in the layer)
EXPECTED = {
    "qwen3_moe": ([0, 1, 2], "mlp.gate"),
    "qwen2_moe": ([0, 2], "mlp.gate"),  # layer 1 in mlp_only_layers
    "mixtral": ([0, 1], "mlp.gate"),
    "olmoe": ([0, 1], "mlp.gate"),
    "deepseek_v3": ([1, 2], "mlp.gate"),  # first_k_dense_replace=1
    "glm4_moe": ([1, 2], "mlp.gate"),
    "gpt_oss": ([0, 1], "mlp.router"),
    "nemotron_h": ([1, 3], "mixer.gate"),  # Mamba, MoE, attention, MoE
}

#: config variants whose routing flags differ from the default tiny config
VARIANTS = [(f, {}) for f in TINY_FAMILIES] + [
    ("qwen3_moe", {"norm_topk_prob": False}),
    ("qwen2_moe", {"norm_topk_prob": True}),
    ("olmoe", {"norm_topk_prob": True}),
    ("mixtral", {"num_experts_per_tok": 1}),
    ("deepseek_v3", {"norm_topk_prob": False, "routed_scaling_factor": 1.0}),
    ("deepseek_v3", {"n_group": 1, "topk_group": 1}),
    ("deepseek_v3", {"n_group": 4, "topk_group": 4}),
    ("glm4_moe", {"n_group": 1, "topk_group": 1, "num_experts_per_tok": 2}),
    ("gpt_oss", {"num_experts_per_tok": 4}),
    ("nemotron_h", {"n_group": 1, "topk_group": 1, "norm_topk_prob": False}),
]


def _key(overrides: dict) -> tuple:
    return tuple(sorted(overrides.items()))


@cache
def _model(family: str, key: tuple = ()) -> torch.nn.Module:
    return tiny_model(family, **dict(key))


def _ids(variant: tuple[str, dict]) -> str:
    family, overrides = variant
    return family + "".join(f"-{k}={v}" for k, v in overrides.items())


def test_every_family_has_an_adapter_and_a_tiny_model():
    from vsraq_modifier.routers import supported_families

    assert set(supported_families()) == set(TINY_FAMILIES) == set(EXPECTED)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_find_routers_finds_the_moe_layers_only(family):
    model = _model(family)
    layers, name = EXPECTED[family]
    sites = find_routers(model)
    assert [s.layer for s in sites] == layers
    assert adapter_for(model).family == family
    for s in sites:
        assert s.name == name
        assert s.router is model.get_submodule(f"model.layers.{s.layer}.{name}")
        assert s.spec.num_experts == s.router.weight.shape[0]
        assert type(s.router).__name__.lower().endswith("router")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", ["random", "tied_rows", "zero_hidden"])
@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_route_equals_the_router_module(variant, case, dtype):
    family, overrides = variant
    model = _model(family, _key(overrides))
    site = find_routers(model)[-1]
    router = randomise_router(site.router, seed=len(case), ties=case != "random")
    router = router.to(dtype)
    spec = site.adapter.spec_for(model.config, router, site.block)
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(257, model.config.hidden_size, generator=g).to(dtype)
    if case == "zero_hidden":
        hidden[::2] = 0
    with torch.no_grad():
        out = router(hidden)
    logits = out[0]
    assert logits.shape == (257, spec.num_experts)
    if case != "random":  # the inputs really tie
        half = spec.num_experts // 2
        assert torch.equal(logits[:, 0], logits[:, 1])
        assert torch.equal(logits[:, :half], logits[:, half:])
    assert_same_decision(out, spec, logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_hook_on_site_router_gives_the_logits_route_needs(family, dtype):
    """In a full forward pass: a forward hook on ``site.router`` and
    ``site.logits(output)`` give logits whose route() is the block's decision."""
    model = tiny_model(family, dtype=dtype)
    sites = find_routers(model)
    seen: dict[int, int] = {}

    def hook(site):
        def fn(module, args, output):
            logits = site.logits(output)
            assert logits.shape == (2 * 7, site.spec.num_experts)
            assert logits.dtype == output[0].dtype
            assert_same_decision(output, site.spec, logits)
            seen[site.layer] = seen.get(site.layer, 0) + 1

        return fn

    for s in sites:
        s.router.register_forward_hook(hook(s))
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(ids)
    assert seen == {s.layer: 1 for s in sites}


def test_spec_bias_is_the_routers_correction_buffer():
    model = _model("deepseek_v3")
    site = find_routers(model)[0]
    assert site.spec.bias is site.router.e_score_correction_bias
    assert site.spec.group_limited and not site.spec.sorted_topk
    assert site.spec.norm_eps == 1e-20 and site.spec.scaling == 2.5


#: family -> RouterSpec fields that, if the adapter dropped them, must change the
#: decision on the tiny model (so the exact-match tests above can catch it)
FLAG_CHANGES = {
    "qwen3_moe": {"normalize": False},
    "qwen2_moe": {"normalize": True},
    "mixtral": {"normalize": False},
    "olmoe": {"normalize": True},
    "deepseek_v3": {"bias": None, "n_group": 1, "topk_group": 1, "scaling": 1.0},
    "glm4_moe": {"bias": None, "n_group": 1, "topk_group": 1, "scaling": 1.0},
    "gpt_oss": {"weight_fn": "scores"},
    "nemotron_h": {"bias": None, "topk_group": 2, "scaling": 1.0},
}


@pytest.mark.parametrize(
    ("family", "field"), [(f, k) for f, d in FLAG_CHANGES.items() for k in d]
)
def test_tiny_configs_exercise_every_routing_flag(family, field):
    model = _model(family)
    site = find_routers(model)[-1]
    router = randomise_router(site.router, seed=3)
    spec = site.adapter.spec_for(model.config, router, site.block)
    changes = {field: FLAG_CHANGES[family][field]}
    if field == "n_group":  # no groups at all
        changes["topk_group"] = 1
    wrong = dataclasses.replace(spec, **changes)
    hidden = torch.randn(257, model.config.hidden_size, generator=torch.Generator())
    with torch.no_grad():
        out = router(hidden)
    assert_same_decision(out, spec, out[0])
    with pytest.raises(AssertionError):
        assert_same_decision(out, wrong, out[0])
