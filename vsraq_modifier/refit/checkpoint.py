"""Router tensors in a checkpoint's safetensors shards, read and overwritten in
place: a re-fitted router has its original dtype and shape, so its bytes take
exactly its old slot and nothing else in any file moves (same header, tensor
order, metadata; every other byte identical)."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "STORAGE_DTYPES",
    "RefitInputError",
    "router_keys",
    "shards",
    "write_checkpoint",
]

_QUANT_SUFFIXES = (
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_global_scale",
    "qweight",
    "scales",
)
STORAGE_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}


class RefitInputError(ValueError):
    """An input that cannot be re-fitted (named in the message)."""


def shards(folder: Path) -> dict[str, tuple[Path, int, dict[str, Any]]]:
    """tensor name -> (shard file, data start, header entry) of every shard."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with f.open("rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, entry in header.items():
            if name != "__metadata__":
                out[name] = (f, 8 + n, entry)
    if not out:
        raise RefitInputError(f"--quantized {folder}: no .safetensors shards")
    return out


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def router_keys(
    model: nn.Module, sites: Sequence[Any], tensors: dict[str, Any], folder: Path
) -> dict[int, dict[str, str]]:
    """layer -> {'weight'|'bias'|'e_score_correction_bias': checkpoint tensor name};
    refuses quantized or missing router tensors."""
    names = _module_names(model)
    out: dict[int, dict[str, str]] = {}
    for s in sites:
        prefix = names[id(s.router)]
        quant = [f"{prefix}.{q}" for q in _QUANT_SUFFIXES if f"{prefix}.{q}" in tensors]
        if quant:
            tail = prefix.split(".", 3)[-1] if prefix.count(".") >= 3 else prefix
            raise RefitInputError(
                f"--quantized {folder}: the router {prefix} is quantized ({quant[0]}); "
                "re-fitting needs full-precision routers. Quantize again with the "
                f'router ignored: add "re:.*{tail}$" to the recipe\'s ignore list'
            )
        keys = {}
        for attr in ("weight", "bias", "e_score_correction_bias"):
            if isinstance(getattr(s.router, attr, None), torch.Tensor):
                keys[attr] = f"{prefix}.{attr}"
        if keys.get("weight") not in tensors:
            raise RefitInputError(
                f"--quantized {folder}: no router tensor "
                f"{prefix}.weight in the shards; the checkpoint has "
                "no routers under the model's own names"
            )
        out[s.layer] = {k: v for k, v in keys.items() if v in tensors}
    return out


def write_checkpoint(
    source: Path, stage: Path, tensors: dict[str, Any], new: dict[str, torch.Tensor]
) -> None:
    """Copy ``source`` into ``stage`` and overwrite the bytes of the ``new`` tensors
    in place (same dtype and shape: nothing else in any file moves)."""
    shutil.copytree(source, stage, dirs_exist_ok=True)
    for name, value in new.items():
        shard, start, entry = tensors[name]
        a, b = entry["data_offsets"]
        t = value.detach().cpu().contiguous().to(STORAGE_DTYPES[entry["dtype"]])
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        if len(data) != b - a or list(t.shape) != entry["shape"]:
            raise RuntimeError(f"{name}: refitted tensor does not match its slot")
        with (stage / shard.relative_to(source)).open("r+b") as fh:
            fh.seek(start + a)
            fh.write(data)
