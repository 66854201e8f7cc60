"""``vsraq demo`` on a tiny Qwen3-MoE: both checkpoints, the report, the summary;
and the refusal of a non-empty output directory."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers.checkpoints import make_text, save_checkpoint
from vsraq_modifier.cli import main
from vsraq_modifier.testing import tiny_model

#: widths that group 128 divides: the compressed-tensors export path
DIMS = dict(
    hidden_size=128, head_dim=32, moe_intermediate_size=128, intermediate_size=128
)


@pytest.fixture(autouse=True)
def small_cpu_footprint(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # AutoRound may write work files to the cwd
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    gc.unfreeze()


def _inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = save_checkpoint(
        tiny_model("qwen3_moe", num_hidden_layers=2, **DIMS), tmp_path / "model"
    )
    calib = tmp_path / "calib.txt"
    calib.write_text(make_text(400, seed=3))
    text = tmp_path / "heldout.txt"
    text.write_text(make_text(300, seed=4))
    return model, calib, text


def _demo(out: Path, model: Path, calib: Path, text: Path, *extra: str) -> int:
    return main(
        [
            "demo",
            "--out",
            str(out),
            "--model",
            str(model),
            "--calibration-text",
            str(calib),
            "--text",
            str(text),
            "--iters",
            "2",
            "--nsamples",
            "4",
            "--seqlen",
            "32",
            "--batch-size",
            "2",
            "--eval-tokens",
            "256",
            "--eval-seq-len",
            "64",
            "--no-progress",
            *extra,
        ]
    )


@pytest.mark.slow
def test_demo_writes_checkpoints_and_report(tmp_path: Path, capsys) -> None:
    model, calib, text = _inputs(tmp_path)
    out = tmp_path / "demo"
    assert _demo(out, model, calib, text) == 0
    printed = capsys.readouterr().out

    assert sorted(p.name for p in out.iterdir()) == [
        "demo.json",
        "mse",
        "routing.json",
        "routing.png",
        "vsraq",
    ]  # no work directory or partial checkpoint left behind
    for label in ("mse", "vsraq"):
        config = json.loads((out / label / "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "compressed-tensors"
        assert config["quantization_config"]["format"] == "pack-quantized"
    doc = json.loads((out / "routing.json").read_text())
    assert [m["label"] for m in doc["models"]] == ["mse", "vsraq"]
    assert doc["tokens"] == 256
    for m in doc["models"]:
        assert 0.0 < m["mean_jaccard"] <= 1.0
        assert math.isfinite(m["oracle_perplexity"])
        assert m["kl"] > 0.0  # 4-bit weights change the output
        assert [entry["layer"] for entry in m["layers"]] == [0, 1]
    assert (out / "routing.png").stat().st_size > 1000

    demo = json.loads((out / "demo.json").read_text())
    assert demo["settings"]["iters"] == 2 and demo["settings"]["seed"] == 0
    assert demo["quantization"]["mse"]["nsamples"] == 4
    assert demo["quantization"]["vsraq"]["vsraq"]["loss"] == "vsraq"
    assert "vsraq" not in demo["quantization"]["mse"]  # plain AutoRound
    assert demo["summary"]["time_ratio"] > 0
    assert "routing disagreement" in printed and "iters" in printed
    # the demo ends with vLLM's verdict on both checkpoints (vsraq check-serving)
    assert printed.count("vsraq check-serving") == 2


def test_demo_refuses_non_empty_dir(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = main(["demo", "--out", str(out), "--model", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "not empty" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
