"""``vsraq report`` end to end: plain transformers checkpoints (fast), a checkpoint
with missing experts (refused), and checkpoints written by both hosts (slow):
llm-compressor ``oneshot`` W4A16 -> compressed-tensors and AutoRound RTN W4A16 ->
auto_round format, both from a tiny Qwen3-MoE."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers.checkpoints import (
    drop_tensors,
    make_text,
    make_tokenizer,
    save_checkpoint,
    tiny_checkpoint,
)
from vsraq_modifier.cli import main
from vsraq_modifier.testing import tiny_model

MODEL_KEYS = {
    "label": str,
    "path": str,
    "mean_jaccard": float,
    "mean_exact_match": float,
    "mean_top1_agreement": float,
    "perplexity": float,
    "kl": float,
    "layers": list,
}
LAYER_KEYS = {
    "layer": int,
    "jaccard": float,
    "exact_match": float,
    "top1_agreement": float,
    "weight_overlap": float,
}


def _check_shape(doc: dict, n_models: int, oracle: bool) -> None:
    assert isinstance(doc["tokens"], int) and doc["tokens"] > 0
    assert isinstance(doc["reference_perplexity"], float)
    assert len(doc["models"]) == n_models
    for m in doc["models"]:
        for key, typ in MODEL_KEYS.items():
            assert type(m[key]) is typ, (key, m[key])
        assert ("oracle_perplexity" in m) == oracle
        assert isinstance(m["dtype"], str)
        for layer in m["layers"]:
            for key, typ in LAYER_KEYS.items():
                assert type(layer[key]) is typ, (key, layer[key])
        assert [layer["layer"] for layer in m["layers"]] == [0, 1, 2]


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    ref = tiny_checkpoint(tmp_path / "ref", seed=0)
    text = tmp_path / "heldout.txt"
    text.write_text(make_text(700, seed=1))
    return ref, text


def _report(ref: Path, text: Path, out: Path, *args: str) -> int:
    """``vsraq report`` of ``ref`` on ``text`` into ``out`` with ``args``; exit code."""
    argv = ["report", "--reference", str(ref), "--text", str(text), *args]
    return main([*argv, "--no-progress", "--out", str(out)])


def _noisy_checkpoint(path: Path) -> Path:
    model = tiny_model("qwen3_moe", seed=0)
    with torch.no_grad():
        for p in model.model.layers[1].parameters():
            p.add_(0.02 * torch.randn_like(p))
    return save_checkpoint(model, path)


def test_report_on_plain_checkpoints(tmp_path: Path, capsys) -> None:
    ref, text = _write_inputs(tmp_path)
    copy = tiny_checkpoint(tmp_path / "copy", seed=0)
    noisy = _noisy_checkpoint(tmp_path / "noisy")
    out = tmp_path / "out"
    rc = _report(
        ref,
        text,
        out,
        *("--quantized", f"copy={copy}", "--quantized", f"noisy={noisy}"),
        *("--seq-len", "64", "--max-tokens", "320", "--oracle"),
    )
    assert rc == 0
    doc = json.loads((out / "routing.json").read_text())
    _check_shape(doc, n_models=2, oracle=True)
    assert doc["tokens"] == 320
    same, other = doc["models"]
    assert (same["label"], same["path"]) == ("copy", str(copy))
    assert same["mean_jaccard"] == 1.0 and same["kl"] == 0.0
    assert same["perplexity"] == doc["reference_perplexity"]
    assert other["mean_jaccard"] < 1.0 and other["kl"] > 0.0
    assert other["layers"][0]["jaccard"] == 1.0  # layer 0 untouched, same input
    assert same["dtype"] == other["dtype"] == doc["reference_dtype"] == "float32"
    png = (out / "routing.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    table = capsys.readouterr().out
    for word in ("reference", "copy", "noisy", "float32", "oracle_ppl", "jaccard"):
        assert word in table


def test_report_refuses_missing_experts(tmp_path: Path, capsys) -> None:
    ref, text = _write_inputs(tmp_path)
    broken = tiny_checkpoint(tmp_path / "broken", seed=0)
    drop_tensors(broken, "layers.2.mlp.experts.")
    rc = _report(ref, text, tmp_path / "out", "--quantized", f"broken={broken}")
    assert rc == 1
    err = capsys.readouterr().err
    assert "model.layers.2.mlp.experts.gate_up_proj" in err
    assert "model.layers.2.mlp.experts.down_proj" in err
    assert not (tmp_path / "out" / "routing.json").exists()


def test_report_input_errors(tmp_path: Path, capsys) -> None:
    ref, text = _write_inputs(tmp_path)
    base = [
        "report",
        "--reference",
        str(ref),
        "--text",
        str(text),
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main([*base, "--quantized", f"x={tmp_path / 'nowhere'}"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert main([*base, "--quantized", f"a={ref}", "--quantized", f"a={ref}"]) == 1
    assert "labels must differ" in capsys.readouterr().err
    assert main([*base, "--quantized", f"a={ref}", "--seq-len", "4096"]) == 1
    assert "max_position_embeddings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--quantized", str(ref)])  # no LABEL=


# --- checkpoints written by the hosts ---------------------------------------------


def _host_reference(path: Path) -> Path:
    # group_size 128 needs in_features divisible by 128
    model = tiny_model(
        "qwen3_moe",
        seed=0,
        hidden_size=128,
        intermediate_size=128,
        moe_intermediate_size=128,
        head_dim=32,
    )
    return save_checkpoint(model, path)


def _llmcompressor_w4a16(ref: Path, out: Path) -> Path:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(ref)
    ids = tok(make_text(600, seed=2))["input_ids"]
    ds = Dataset.from_dict(
        {
            "input_ids": [ids[i * 64 : (i + 1) * 64] for i in range(8)],
            "attention_mask": [[1] * 64] * 8,
        }
    )
    recipe = QuantizationModifier(
        targets="Linear", scheme="W4A16", ignore=["lm_head", "re:.*mlp.gate$"]
    )
    oneshot(
        model=model,
        dataset=ds,
        recipe=recipe,
        processor=tok,
        num_calibration_samples=8,
        max_seq_length=64,
    )
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    return out


def _autoround_rtn_w4a16(ref: Path, out: Path) -> Path:
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(ref)
    ar = AutoRound(
        model,
        tok,
        scheme="W4A16",
        iters=0,
        disable_torch_compile=True,
        nsamples=8,
        seqlen=64,
        dataset=[make_text(100, seed=i) for i in range(8)],
    )
    ar.quantize_and_save(str(out), format="auto_round")
    (saved,) = [p.parent for p in out.rglob("config.json")]
    return saved


@pytest.mark.slow
def test_report_on_host_checkpoints(tmp_path: Path, capsys) -> None:
    ref = _host_reference(tmp_path / "ref")
    text = tmp_path / "heldout.txt"
    text.write_text(make_text(700, seed=1))
    ct = _llmcompressor_w4a16(ref, tmp_path / "ct")
    ar = _autoround_rtn_w4a16(ref, tmp_path / "ar")
    assert (
        json.loads((ct / "config.json").read_text())["quantization_config"][
            "quant_method"
        ]
        == "compressed-tensors"
    )
    assert (
        json.loads((ar / "config.json").read_text())["quantization_config"][
            "quant_method"
        ]
        == "auto-round"
    )
    out = tmp_path / "out"
    # auto_round first: its loader edits transformers globally, the compressed-tensors
    # checkpoint after it must still load completely
    rc = _report(
        ref,
        text,
        out,
        *("--quantized", f"ar={ar}", "--quantized", f"ct={ct}"),
        *("--seq-len", "128", "--max-tokens", "512", "--oracle"),
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads((out / "routing.json").read_text())
    _check_shape(doc, n_models=2, oracle=True)
    by_label = {m["label"]: m for m in doc["models"]}
    assert by_label["ar"]["dtype"] == "float16"  # auto-round's CPU backend
    assert by_label["ct"]["dtype"] == "float32"
    for m in doc["models"]:
        for key in ("mean_jaccard", "perplexity", "kl", "oracle_perplexity"):
            assert math.isfinite(m[key]), (m["label"], key)
        assert 0.0 < m["mean_jaccard"] <= 1.0
        assert m["kl"] > 0.0  # 4-bit weights change the output
    assert "float16" in captured.out
