"""vLLM's fused-MoE rules (vsraq_modifier/serving/rules.py) on schemes built in
code, and the checkpoint reader on synthetic config.json + safetensors headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vsraq_modifier.serving import (
    UNQUANTIZED,
    CheckpointError,
    Scheme,
    check_checkpoint,
    check_moe_layer,
    moe_kernel,
    read_tensor_shapes,
    scheme_from_config_group,
)


def wna16(bits: int = 4, group: int = 64, **kw) -> Scheme:
    strategy = "channel" if group == -1 else "group"
    return Scheme(
        bits=bits, group_size=group, format="pack-quantized", strategy=strategy, **kw
    )


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group", [-1, 32, 64, 128])
def test_marlin_takes_int4_int8_at_its_groups_on_aligned_shapes(bits, group):
    verdict = moe_kernel(wna16(bits, group), hidden=256, intermediate=128)
    assert verdict.servable
    assert verdict.kernel == f"Marlin WNA16 MoE (int{bits})"


def test_group_wider_than_the_intermediate_is_refused_with_the_fix():
    verdict = moe_kernel(wna16(4, 128), hidden=256, intermediate=64)
    assert not verdict.servable
    assert "group 128 does not divide intermediate 64" in verdict.reason
    assert "group 64" in verdict.reason  # the group that would work


def test_marlin_shape_rules_and_the_triton_fallback():
    # intermediate 96: 96 % 64 != 0, Marlin refuses; groups of 32 divide it
    fallback = moe_kernel(wna16(4, 32), hidden=256, intermediate=96)
    assert fallback.servable and fallback.kernel.startswith("Triton WNA16")
    assert "intermediate % 64 == 0" in fallback.kernel
    # hidden 192: not a multiple of 128
    assert moe_kernel(wna16(4, 64), hidden=192, intermediate=128).kernel.startswith(
        "Triton WNA16"
    )
    # outside Marlin: activation order, channels and zero points are refused
    for scheme in (
        wna16(4, 32, actorder="group"),
        wna16(4, -1),
        wna16(4, 32, symmetric=False),
    ):
        verdict = moe_kernel(scheme, hidden=256, intermediate=96)
        assert not verdict.servable, scheme
    # ... but Marlin takes them where its shape rules hold
    assert moe_kernel(
        wna16(4, 64, actorder="group"), hidden=256, intermediate=128
    ).servable
    assert moe_kernel(
        wna16(4, 64, symmetric=False), hidden=256, intermediate=128
    ).servable


def test_bits_outside_wna16():
    int3 = moe_kernel(wna16(3, 64), hidden=256, intermediate=64)
    assert int3.status == "not servable"
    assert "int3 MoE is not served by released vLLM" in int3.reason
    int2 = moe_kernel(wna16(2, 64), hidden=256, intermediate=64)
    assert int2.status == "needs optional kernel" and not int2.servable
    assert "Humming" in int2.kernel


def test_format_must_be_pack_quantized():
    scheme = Scheme(bits=4, group_size=64, format="int-quantized", strategy="group")
    verdict = moe_kernel(scheme, hidden=256, intermediate=64)
    assert not verdict.servable and "'pack-quantized'" in verdict.reason


def test_fp4_and_fp8_methods():
    nvfp4 = Scheme(
        bits=4,
        type="float",
        group_size=16,
        strategy="tensor_group",
        act_bits=4,
        act_type="float",
        format="nvfp4-pack-quantized",
    )
    assert "NVFP4" in moe_kernel(nvfp4, 256, 64).kernel
    mxfp4 = Scheme(bits=4, type="float", group_size=32, strategy="group")
    assert "MXFP4" in moe_kernel(mxfp4, 256, 64).kernel
    fp8 = Scheme(
        bits=8,
        type="float",
        group_size=-1,
        strategy="tensor",
        act_bits=8,
        act_type="float",
    )
    assert moe_kernel(fp8, 256, 64).servable
    w4a8 = Scheme(bits=4, group_size=64, act_bits=8, act_type="int", strategy="group")
    assert not moe_kernel(w4a8, 256, 64).servable
    assert moe_kernel(UNQUANTIZED, 200, 50).kernel == "unquantized fused MoE"
    asym = Scheme(
        bits=4, type="float", group_size=32, strategy="group", symmetric=False
    )
    assert "must be symmetric" in moe_kernel(asym, 256, 64).reason
    fp4_g16_group = Scheme(bits=4, type="float", group_size=16, strategy="group")
    assert not moe_kernel(fp4_g16_group, 256, 64).servable


def test_a_layer_with_two_expert_schemes_is_refused():
    report = check_moe_layer(3, [wna16(4, 64)] * 6 + [wna16(8, 64)] * 2, 256, 64)
    assert not report.servable and report.kernel is None
    (problem,) = report.problems
    assert problem.startswith("experts of layer 3 have two schemes")
    assert report.experts == {
        "W4A16 g64 pack-quantized": 6,
        "W8A16 g64 pack-quantized": 2,
    }


def test_quantized_router_and_mixed_qkv_are_refused():
    attention = {"q_proj": wna16(4, 64), "k_proj": wna16(8, 64), "v_proj": wna16(4, 64)}
    report = check_moe_layer(
        1, [wna16()] * 3, 256, 64, router=wna16(), attention=attention
    )
    assert not report.servable
    assert any("router of layer 1 is quantized" in p for p in report.problems)
    assert any(
        "q/k/v projections of layer 1 have two schemes" in p for p in report.problems
    )
    fine = check_moe_layer(1, [wna16()] * 3, 256, 64, attention={"o_proj": wna16(8)})
    assert fine.servable and fine.problems == []


def test_scheme_from_a_compressed_tensors_config_group():
    group = {
        "targets": ["Linear"],
        "format": None,
        "weights": {
            "num_bits": 4,
            "type": "int",
            "strategy": "channel",
            "group_size": None,
            "symmetric": False,
            "actorder": None,
        },
    }
    scheme = scheme_from_config_group(group, "pack-quantized")
    assert scheme == Scheme(
        bits=4,
        group_size=-1,
        symmetric=False,
        format="pack-quantized",
        strategy="channel",
    )
    assert scheme_from_config_group({"targets": ["Linear"]}, None) is UNQUANTIZED


# --- the checkpoint reader on synthetic files --------------------------------------


def write_safetensors(path: Path, shapes: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file of zeros (header + data)."""
    sizes = {"I32": 4, "F32": 4, "BF16": 2, "I64": 8}
    header, offset = {}, 0
    for name, (dtype, shape) in shapes.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + n],
        }
        offset += n
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def synthetic_moe(
    root: Path, *, bits: int, group: int, hidden=256, inter=64, experts=2, qconfig=None
) -> Path:
    """Two MoE layers of pack-quantized experts (shapes as compressed-tensors
    writes them) and an unquantized router."""
    shapes = {"model.embed_tokens.weight": ("BF16", [32, hidden])}
    for layer in range(2):
        pre = f"model.layers.{layer}"
        shapes[f"{pre}.mlp.gate.weight"] = ("BF16", [experts, hidden])
        shapes[f"{pre}.self_attn.q_proj.weight"] = ("BF16", [hidden, hidden])
        for e in range(experts):
            for proj, (rows, cols) in {
                "gate_proj": (inter, hidden),
                "up_proj": (inter, hidden),
                "down_proj": (hidden, inter),
            }.items():
                name = f"{pre}.mlp.experts.{e}.{proj}"
                shapes[f"{name}.weight_packed"] = ("I32", [rows, cols * bits // 32])
                shapes[f"{name}.weight_scale"] = ("BF16", [rows, max(1, cols // group)])
    root.mkdir(parents=True, exist_ok=True)
    write_safetensors(root / "model.safetensors", shapes)
    weights = {
        "num_bits": bits,
        "type": "int",
        "strategy": "group",
        "group_size": group,
        "symmetric": True,
    }
    qconfig = qconfig or {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {"g": {"targets": ["re:.*experts.*"], "weights": weights}},
        "ignore": ["lm_head", "re:.*mlp.gate$"],
    }
    config = {
        "model_type": "qwen3_moe",
        "hidden_size": hidden,
        "moe_intermediate_size": inter,
        "quantization_config": qconfig,
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


def test_reader_takes_shapes_from_headers_and_schemes_from_the_config(tmp_path):
    report = check_checkpoint(synthetic_moe(tmp_path / "ok", bits=4, group=64))
    assert report.servable and [lr.layer for lr in report.layers] == [0, 1]
    layer = report.layers[0]
    assert (layer.hidden, layer.intermediate) == (256, 64)
    assert layer.experts == {"W4A16 g64 pack-quantized": 6}
    assert layer.router == "unquantized" and layer.attention == ["unquantized"]
    assert report.to_dict()["layers"][0]["status"] == "servable"
    shapes = read_tensor_shapes(tmp_path / "ok")
    assert shapes["model.layers.0.mlp.experts.1.down_proj.weight_packed"] == (
        "I32",
        [256, 8],
    )


def test_reader_refuses_w3_and_wide_groups_with_reasons(tmp_path):
    w3 = check_checkpoint(synthetic_moe(tmp_path / "w3", bits=3, group=64))
    assert not w3.servable
    assert any("int3 MoE is not served" in p for p in w3.all_problems())
    wide = check_checkpoint(synthetic_moe(tmp_path / "g128", bits=4, group=128))
    assert any(
        "group 128 does not divide intermediate 64" in p for p in wide.all_problems()
    )


def test_config_that_does_not_describe_the_tensors_is_refused(tmp_path):
    qconfig = {"quant_method": "compressed-tensors", "config_groups": {}, "ignore": []}
    report = check_checkpoint(
        synthetic_moe(tmp_path / "x", bits=4, group=64, qconfig=qconfig)
    )
    assert not report.servable
    assert any(
        "the config does not describe this checkpoint" in p
        for p in report.all_problems()
    )


def test_name_targets_win_over_the_linear_class_as_in_vllm(tmp_path):
    four, eight = (
        {"num_bits": b, "type": "int", "strategy": "group", "group_size": 64}
        for b in (4, 8)
    )
    qconfig = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {  # the class target comes first in the config
            "all": {"targets": ["Linear"], "weights": eight},
            "experts": {"targets": ["re:.*experts.*"], "weights": four},
        },
        "ignore": ["lm_head", "re:.*mlp.gate$"],
    }
    ckpt = synthetic_moe(tmp_path / "p", bits=4, group=64, qconfig=qconfig)
    layer = check_checkpoint(ckpt).layers[0]
    assert layer.experts == {"W4A16 g64 pack-quantized": 6}
    assert layer.attention == ["W8A16 g64 pack-quantized"]
    assert layer.router == "unquantized" and layer.servable


def test_unreadable_inputs_raise_checkpoint_error(tmp_path):
    ckpt = synthetic_moe(tmp_path / "c", bits=4, group=64)
    for blob in (
        b"\x01",
        struct.pack("<Q", 9) + b'{"a": 1}!',
        struct.pack("<Q", 4) + b"[1]",
    ):
        (ckpt / "model.safetensors").write_bytes(blob)
        with pytest.raises(CheckpointError, match="unreadable safetensors header"):
            check_checkpoint(ckpt)
    auto_round = tmp_path / "ar"
    synthetic_moe(
        auto_round, bits=4, group=64, qconfig={"quant_method": "auto-round", "bits": 4}
    )
    with pytest.raises(CheckpointError, match="format='llm_compressor'"):
        check_checkpoint(auto_round)
    gptq = synthetic_moe(
        tmp_path / "gptq", bits=4, group=64, qconfig={"quant_method": "gptq"}
    )
    with pytest.raises(CheckpointError, match="quant_method 'gptq'; check-serving"):
        check_checkpoint(gptq)
    (gptq / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        check_checkpoint(gptq)


def test_tensor_parallel_ranks_each_hold_a_slice_of_the_intermediate(tmp_path):
    ckpt = synthetic_moe(tmp_path / "tp", bits=4, group=64, inter=128)
    assert check_checkpoint(ckpt, tensor_parallel_size=2).servable  # 64 per rank
    four = check_checkpoint(ckpt, tensor_parallel_size=4)  # 32 per rank
    assert four.layers[0].intermediate == 32 and not four.servable
    assert "group 64 does not divide intermediate 32" in four.all_problems()[0]
    three = check_checkpoint(ckpt, tensor_parallel_size=3)
    assert "does not split over 3 tensor-parallel ranks" in three.all_problems()[-1]
    with pytest.raises(CheckpointError, match="use >= 1"):
        check_checkpoint(ckpt, tensor_parallel_size=0)
