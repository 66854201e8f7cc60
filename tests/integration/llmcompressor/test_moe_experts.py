"""llm-compressor's linearized experts and VSRAQ.

- ``moe_calibrate_all_experts`` (``oneshot``'s default: every expert runs on every
  token, routed outputs kept): the routing objective only needs the routed
  outputs, which are the same either way. ``VSRAQModifier`` therefore tunes with
  routed tokens only (k/E of the expert compute per iteration) and leaves the
  user's setting to the calibration statistics. Tested: the tuning forwards see
  routed tokens, the calibration pass all of them, and the quantized weights do
  not depend on the setting.
- NVFP4: plain ``AutoRoundModifier`` crashes on the experts' activation child
  (the trap); ``experts_without_activation_child`` restores the module tree.
"""

from __future__ import annotations

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


def _quantized_state(model) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if k.endswith(("weight", "weight_scale", "weight_zero_point"))
    }


def test_tuning_runs_routed_tokens_only(checkpoints, monkeypatch):
    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier.integrations.llmcompressor.autoround_per_layer import (
        LLMCompressorVSRAQQuantizer as Quantizer,
    )

    model = load(tiny_checkpoint("qwen3_moe", checkpoints))
    ids = token_ids(model.config.vocab_size, n=2)
    phase = {"now": "calibration"}
    rows: dict[str, list[int]] = {"calibration": [], "tuning": []}

    quantize_block = Quantizer.quantize_block

    def spy(self, block, *args, **kwargs):
        phase["now"] = "tuning"
        try:
            return quantize_block(self, block, *args, **kwargs)
        finally:
            phase["now"] = "calibration"

    monkeypatch.setattr(Quantizer, "quantize_block", spy)

    def count(_module, args):
        rows[phase["now"]].append(args[0].reshape(-1, args[0].shape[-1]).shape[0])

    from llmcompressor.modeling.moe.linearize import linearize_moe

    linearize_moe(model)
    expert = model.model.layers[1].mlp.experts[0]
    expert.register_forward_pre_hook(count)

    run_oneshot(model, VSRAQModifier(**modifier_args("W4A16", batch_size=2)), ids)
    seq = ids.shape[1]
    assert rows["calibration"] and rows["tuning"]
    # calibration (pipeline pass, full-precision chain, AutoRound's reference and
    # statistics forwards): every token of one sample or of the batch of two
    assert set(rows["calibration"]) <= {seq, 2 * seq}
    assert seq in rows["calibration"]
    # tuning forwards (batches of both samples): the tokens routed to expert 0
    # only (top-2 of 8 experts: a quarter on average)
    assert max(rows["tuning"]) < 2 * seq


def test_quantized_weights_do_not_depend_on_calibrate_all_experts(checkpoints):
    from vsraq_modifier import VSRAQModifier

    path = tiny_checkpoint("qwen3_moe", checkpoints)
    states = []
    for all_experts in (True, False):
        model = load(path)
        ids = token_ids(model.config.vocab_size, n=2)
        run_oneshot(
            model,
            VSRAQModifier(**modifier_args("W4A16")),
            ids,
            moe_calibrate_all_experts=all_experts,
        )
        states.append(_quantized_state(model))
    with_all, routed = states
    assert with_all.keys() == routed.keys()
    assert any(k.endswith("weight_scale") for k in with_all)
    for key in with_all:
        torch.testing.assert_close(with_all[key], routed[key], msg=key)


def test_nvfp4_activation_child_trap(checkpoints):
    """AutoRoundModifier itself crashes on NVFP4 MoE; the context manager the
    VSRAQ modifier uses keeps the module tree intact around the call."""
    from llmcompressor.modeling.moe.linearize import linearize_moe
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    from vsraq_modifier.integrations.llmcompressor.seams import (
        experts_without_activation_child,
    )

    model = load(tiny_checkpoint("qwen3_moe", checkpoints))
    ids = token_ids(model.config.vocab_size, n=2)
    args = modifier_args("NVFP4")
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
        run_oneshot(model, AutoRoundModifier(**args), ids)

    model = load(tiny_checkpoint("qwen3_moe", checkpoints))
    linearize_moe(model)
    layer = model.model.layers[0]
    before = [n for n, _ in layer.named_modules()]
    experts = layer.mlp.experts
    act = experts.act_fn
    with experts_without_activation_child(layer) as n:
        assert n == 1
        assert all(not isinstance(m, type(act)) for m in experts)  # what AR iterates
        assert experts.act_fn is act
    assert [n for n, _ in layer.named_modules()] == before
    assert list(experts)[-1] is act
