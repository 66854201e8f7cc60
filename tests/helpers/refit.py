"""Helpers for the ``vsraq refit`` tests: a tiny Qwen3-MoE reference, its
compressed-tensors W4A16 checkpoint from llm-compressor's data-free
``QuantizationModifier`` (groups of 32, the tiny model's widths), and a
calibration text."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tests.helpers.checkpoints import make_text, make_tokenizer, tiny_checkpoint

__all__ = [
    "fake_quantize",
    "make_text",
    "quantize",
    "shard_tensors",
    "tiny_checkpoint",
]

ROUTER_IGNORE = "re:.*mlp.gate$"


def quantize(
    reference: Path,
    out: Path,
    *,
    scheme: str = "W4A16",
    ignore_router: bool = True,
    max_shard_size: str | None = "20KB",
) -> Path:
    """llm-compressor W4A16 (int4, symmetric, group 32), or a preset ``scheme``
    (data-free, e.g. NVFP4A16), of ``reference``, saved
    compressed into ``out`` (several shards unless ``max_shard_size`` is None)."""
    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32)
    weights = dict(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=32
    )
    ignore = ["lm_head", *([ROUTER_IGNORE] if ignore_router else [])]
    recipe = (
        QuantizationModifier(
            config_groups={"g": {"targets": ["Linear"], "weights": weights}},
            ignore=ignore,
        )
        if scheme == "W4A16"
        else QuantizationModifier(targets=["Linear"], scheme=scheme, ignore=ignore)
    )
    oneshot(model=model, recipe=recipe)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, save_compressed=True, **kwargs)
    make_tokenizer().save_pretrained(out)
    return out


def shard_tensors(path: Path) -> tuple[bytes, dict[str, bytes]]:
    """(header bytes, tensor name -> its data bytes) of one safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    data = {
        k: raw[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]]
        for k, v in header.items()
        if k != "__metadata__"
    }
    return raw[: 8 + n], data


def fake_quantize(
    model,
    bits: int = 3,
    group: int = 16,
    skip: tuple[str, ...] = ("embed", "lm_head", "mlp.gate.", "mlp.router.", "norm"),
) -> None:
    """Round every weight matrix of ``model`` but the routers, embeddings and norms
    to ``bits``-bit symmetric groups of ``group`` along the input (in place): a
    host-free stand-in for a weight-only quantizer on the tiny models."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim < 2 or any(s in name for s in skip):
                continue
            w = p.reshape(-1, group)
            q = 2 ** (bits - 1) - 1
            scale = w.abs().amax(-1, keepdim=True).clamp_min(1e-8) / q
            p.copy_(((w / scale).round().clamp(-q - 1, q) * scale).reshape(p.shape))
