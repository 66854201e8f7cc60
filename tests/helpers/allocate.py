"""Helpers for the ``vsraq allocate`` tests: the command on two domain texts, the
allocation's recipe through llm-compressor ``oneshot`` and its layer config
through AutoRound (iters=0), all on the tiny word-level tokenizer and text."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from tests.helpers.checkpoints import make_text, make_tokenizer
from vsraq_modifier.cli import main

#: the VSRAQModifier arguments llm-compressor's QuantizationModifier does not take
VSRAQ_ONLY = ("iters", "enable_torch_compile", "loss")


def allocate(
    model_dir: Path, tmp: Path, out: Path, bits: str, schemes: str, *extra: str
) -> Path:
    """``vsraq allocate`` of ``model_dir`` on a code and a prose text (written in
    ``tmp``) into ``out``, the settings every allocate test shares; exit 0."""
    files = []
    for i, name in enumerate(("code", "prose")):
        f = tmp / f"{name}.txt"
        f.write_text(make_text(96, seed=i))
        files += ["--dataset", f"{name}={f}"]
    argv = ["allocate", "--model", str(model_dir), *files, "--avg-bits", bits]
    argv += ["--schemes", schemes, *extra, "--seq-len", "16", "--max-tokens", "32"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    return out


def write_recipe(out: Path, path: Path, modifier: str = "QuantizationModifier") -> Path:
    """DIR/recipe.yaml with its stage run by ``modifier`` (VSRAQModifier cut to 2
    iterations, QuantizationModifier without the VSRAQ-only keys), saved as ``path``."""
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    args = recipe["quant_stage"]["quant_modifiers"].pop("VSRAQModifier")
    if modifier == "VSRAQModifier":
        args["iters"] = 2
    else:
        for key in VSRAQ_ONLY:
            args.pop(key)
    recipe["quant_stage"]["quant_modifiers"][modifier] = args
    path.write_text(yaml.safe_dump(recipe))
    return path


def oneshot_save(
    model_dir: Path, recipe: Path, ckpt: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """``oneshot`` of ``recipe`` on ``model_dir`` (2 samples of 16 tokens), saved
    compressed as ``ckpt``; (ids, logits) of the model in memory to compare with
    its reload."""
    from datasets import Dataset
    from llmcompressor import oneshot

    from vsraq_modifier.metrics.loading import load_model

    model = load_model(model_dir, dtype="float32").model
    tok = make_tokenizer()
    calib = [tok(make_text(16, seed=s))["input_ids"] for s in range(2)]
    data = Dataset.from_dict({"input_ids": calib, "attention_mask": [[1] * 16] * 2})
    oneshot(
        model=model,
        processor=tok,
        dataset=data,
        recipe=str(recipe),
        num_calibration_samples=2,
        max_seq_length=16,
        shuffle_calibration_samples=False,
    )
    ids = torch.tensor([make_tokenizer()(make_text(16, seed=5))["input_ids"]])
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(ckpt, save_compressed=True)
    return ids, expected


def calib_samples() -> list[torch.Tensor]:
    """AutoRound's calibration: two 16-token rows of one fixed text."""
    ids = make_tokenizer()(make_text(64, seed=3))["input_ids"]
    return [torch.tensor(ids[i * 16 : (i + 1) * 16]).reshape(1, 16) for i in range(2)]


def autoround(model_dir: Path, out: Path):
    """AutoRound (iters=0, CPU) of ``model_dir`` with DIR/layer_config.json, the
    run the allocate tests save in their formats."""
    from auto_round import AutoRound

    from vsraq_modifier.metrics.loading import load_model

    return AutoRound(
        load_model(model_dir, dtype="float32").model,
        make_tokenizer(),
        scheme="W4A16",
        layer_config=json.loads((out / "layer_config.json").read_text()),
        iters=0,
        nsamples=2,
        seqlen=16,
        batch_size=1,
        dataset=calib_samples(),
        device_map="cpu",
        enable_torch_compile=False,
    )
