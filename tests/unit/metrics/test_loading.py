"""Loading checkpoints for the routing report: complete loads pass, partial ones are
refused naming the tensors (the conversion-table seam: tests/unit/
test_transformers_seams.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.checkpoints import drop_tensors, make_text, tiny_checkpoint
from vsraq_modifier.metrics.loading import (
    ExpertSchemesError,
    IncompleteCheckpointError,
    check_expert_schemes,
    checkpoint_quant_method,
    load_model,
    load_token_ids,
)


def test_complete_checkpoint_loads(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    loaded = load_model(tmp_path, dtype="float32")
    assert loaded.dtype == "float32" and loaded.quant_method is None
    assert not loaded.model.training
    assert load_model(tmp_path, dtype="bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize(
    ("dropped", "named"),
    [
        # a whole layer's experts gone: missing, left random
        ("layers.1.mlp.experts.", "missing from the checkpoint"),
        # one expert gone: the fused tensor has the wrong shape
        ("layers.2.mlp.experts.3.", "wrong shape"),
    ],
)
def test_missing_expert_weights_are_refused(
    tmp_path: Path, dropped: str, named: str
) -> None:
    tiny_checkpoint(tmp_path)
    assert drop_tensors(tmp_path, dropped)
    layer = dropped.split(".")[1]
    with pytest.raises(IncompleteCheckpointError) as err:
        load_model(tmp_path)
    msg = str(err.value)
    assert named in msg
    assert f"model.layers.{layer}.mlp.experts.gate_up_proj" in msg
    assert f"model.layers.{layer}.mlp.experts.down_proj" in msg


def test_quant_method_and_token_ids(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    assert checkpoint_quant_method(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint_quant_method(tmp_path / "nowhere")
    text = tmp_path / "t.txt"
    text.write_text(make_text(300))
    ids = load_token_ids(text, tmp_path, max_tokens=100)
    assert ids.shape == (100,) and ids.dtype == torch.long
    assert int(ids.min()) >= 2  # every word known: no [UNK], no special tokens


def _group(bits: int, targets: list[str]) -> dict:
    weights = {"num_bits": bits, "type": "int", "symmetric": True,
               "strategy": "group", "group_size": 64}  # fmt: skip
    return {"targets": targets, "weights": weights, "format": "pack-quantized"}


def _ct_checkpoint(path: Path, groups: dict, model_type: str = "qwen3_moe") -> Path:
    """config.json and the tensor names of a 2-layer, 2-expert compressed-tensors
    checkpoint (the check reads names only, so the tensors are 1 element)."""
    import json

    from safetensors.torch import save_file

    path.mkdir()
    qc = {"quant_method": "compressed-tensors", "format": "mixed-precision",
          "config_groups": groups, "ignore": ["lm_head"]}  # fmt: skip
    doc = {"model_type": model_type, "quantization_config": qc}
    (path / "config.json").write_text(json.dumps(doc))
    names = [f"model.layers.{i}.self_attn.q_proj" for i in range(2)] + [
        f"model.layers.{i}.mlp.experts.{e}.{p}"
        for i in range(2) for e in range(2) for p in ("gate_proj", "down_proj")
    ]  # fmt: skip
    tensors = {
        f"{n}.{p}": torch.zeros(1)
        for n in names
        for p in ("weight_packed", "weight_scale", "weight_shape")
    }
    save_file({**tensors, "lm_head.weight": torch.zeros(1)}, path / "model.safetensors")
    return path


def _experts(layer: int) -> list[str]:
    """AutoRound's llm_compressor export: plain module names as targets."""
    return [
        f"model.layers.{layer}.mlp.experts.{e}.{p}"
        for e in range(2) for p in ("gate_proj", "down_proj")
    ]  # fmt: skip


ATTN = [f"model.layers.{i}.self_attn.q_proj" for i in range(2)]
#: a group per scheme, as AutoRound's export of the 3.7-bit allocation writes them
MIXED = {"group_0": _group(4, ATTN + _experts(0)), "group_1": _group(2, _experts(1))}


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        # AutoRound's export of a mixed allocation: a group per scheme, plain names
        (
            MIXED,
            "has experts in 2 groups (W2A16 g64 pack-quantized in layer 1, "
            "W4A16 g64 pack-quantized in layer 0)",
        ),
        # llm-compressor's save_compressed of the recipe: re: targets per layer
        (
            {
                "group_0": _group(4, [r"re:.*layers\.0\.mlp\.experts\..*"]),
                "group_1": _group(2, [r"re:.*layers\.1\.mlp\.experts\..*"]),
                "group_2": _group(4, ["re:.*self_attn.*"]),
            },
            "has experts in 2 groups",
        ),
        # one experts scheme, but transformers takes the first plain-name group
        (
            {
                "group_0": _group(4, ATTN),
                "group_1": _group(2, [*_experts(0), *_experts(1)]),
            },
            "here group_0 (W4A16 g64 pack-quantized), and this compressed-tensors "
            "checkpoint's experts are in another (W2A16 g64 pack-quantized in "
            "layers 0-1)",
        ),
    ],
)
def test_mixed_expert_schemes_are_refused_before_loading(
    tmp_path: Path, groups: dict, expected: str
) -> None:
    ckpt = _ct_checkpoint(tmp_path / "ct", groups)
    with pytest.raises(ExpertSchemesError) as err:
        load_model(ckpt)  # refused from the headers: the 1-element tensors unread
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{ckpt}: transformers ")
    assert "reads every MoE layer's experts with one config group" in msg
    assert expected in msg, msg
    assert f"vsraq check-serving {ckpt}" in msg and "(format='fake')" in msg
    assert isinstance(err.value, RuntimeError)  # what transformers raised before


@pytest.mark.parametrize(
    ("groups", "model_type"),
    [
        # llm-compressor, one experts scheme: transformers picks the experts' group
        (
            {"group_0": _group(4, ["re:.*self_attn.*"]),
             "group_1": _group(2, [r"re:.*mlp\.experts.*"])},
            "qwen3_moe",
        ),  # fmt: skip
        # one group for everything (a class target)
        ({"group_0": _group(4, ["Linear"])}, "qwen3_moe"),
        # a family transformers does not fuse: each expert its own Linear
        (MIXED, "llama"),
    ],
)
def test_expert_schemes_transformers_reads_pass(
    tmp_path: Path, groups: dict, model_type: str
) -> None:
    check_expert_schemes(_ct_checkpoint(tmp_path / "ct", groups, model_type))
    tiny_checkpoint(tmp_path / "plain")
    check_expert_schemes(tmp_path / "plain")
