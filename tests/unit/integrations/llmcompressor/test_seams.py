"""One test per llm-compressor seam (integrations/llmcompressor/seams.py): each
checks, by signature, attribute or a small call, that llm-compressor still offers
what the seam uses."""

from __future__ import annotations

import inspect

from vsraq_modifier.integrations.llmcompressor import seams
from vsraq_modifier.testing import tiny_model


def test_register_lazy_modifier() -> None:
    from llmcompressor.modifiers import ModifierFactory

    made: list[dict] = []

    def create(**kwargs):
        made.append(kwargs)
        return "built"

    seams.register_lazy_modifier(ModifierFactory, "_SeamProbeModifier", create)
    try:
        assert (
            ModifierFactory.create(
                "_SeamProbeModifier",
                allow_registered=True,
                allow_experimental=True,
                x=1,
            )
            == "built"
        )
    finally:
        ModifierFactory._registered_registry.pop("_SeamProbeModifier", None)
    assert made and made[0].get("x") == 1


def test_modifier_layer_state() -> None:
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    assert "_all_module_input" in AutoRoundModifier.__private_attributes__
    params = list(inspect.signature(AutoRoundModifier._is_decoding_layer).parameters)
    assert params == ["self", "module"]
    modifier = AutoRoundModifier(scheme="W4A16", targets=["Linear"])
    model = tiny_model("qwen3_moe", num_hidden_layers=2)
    modifier._add_temporary_names(model)  # what its calibration start does
    modifier._sequential_targets = ["Qwen3MoeDecoderLayer"]  # set by initialize
    layer = model.model.layers[0]
    assert seams.decoding_layers(modifier, model.modules()) == list(model.model.layers)
    assert seams.captured_calls(modifier, layer) is None
    seams.replace_captured_calls(modifier, layer, [((1,), {})])
    assert seams.captured_calls(modifier, layer) == [((1,), {})]


def test_arguments_seam() -> None:
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    params = list(
        inspect.signature(AutoRoundModifier._update_device_map_for_dp).parameters
    )
    assert params == ["self", "ar_kwargs"]
    base = seams.arguments_seam()
    assert issubclass(base, AutoRoundModifier) and base is seams.arguments_seam()


def test_experts_without_activation_child() -> None:
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D

    model = tiny_model("qwen3_moe", num_hidden_layers=1)
    fused = model.model.layers[0].mlp.experts
    cls = LinearExperts2D.get_linear_experts_cls(type(fused))
    linear = cls.from_experts_module(fused, model.config)
    model.model.layers[0].mlp.experts = linear
    assert "act_fn" in linear._modules
    with seams.experts_without_activation_child(model) as n:
        assert n == 1 and "act_fn" not in linear._modules
        assert linear.act_fn is not None
    assert "act_fn" in linear._modules


def test_routed_experts_only() -> None:
    from llmcompressor.modeling.moe import context

    before = context._CALIBRATE_ALL_EXPERTS
    assert isinstance(before, bool)
    context._CALIBRATE_ALL_EXPERTS = True
    try:
        with seams.routed_experts_only():
            assert context._CALIBRATE_ALL_EXPERTS is False
        assert context._CALIBRATE_ALL_EXPERTS is True
    finally:
        context._CALIBRATE_ALL_EXPERTS = before


def test_cpu_ddp_wrapping() -> None:
    from auto_round.algorithms.quantization.sign_round import quantizer as host

    original = host.setup_ddp_if_needed_
    params = list(inspect.signature(original).parameters)
    assert len(params) == 3 and params[-1] == "device_list"
    with seams.cpu_ddp_wrapping():
        assert host.setup_ddp_if_needed_ is not original
    assert host.setup_ddp_if_needed_ is original
