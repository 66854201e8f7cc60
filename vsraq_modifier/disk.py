"""Disk space for a checkpoint, checked before tuning rather than at the write.

AutoRound tunes every block and only then writes; with too little space the run
fails at the end with a ``SafetensorError``. The estimate here is a lower bound
(quantized weight matrices at the scheme's bits plus one 2-byte scale per group;
embeddings and 1-D tensors at 2 bytes), so a refusal is never wrong; a write can
still fail when the real checkpoint is larger (zero points, packing, other files).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from vsraq_modifier.checkpoint_dir import _weights, safetensors_shapes
from vsraq_modifier.inputs import DiskSpaceError

__all__ = ["check_free_space", "estimate_checkpoint_bytes", "scheme_bits"]

_FP = {"NVFP4": (4, 16), "MXFP4": (4, 32), "MXFP8": (8, 32), "FP8": (8, 0)}


def scheme_bits(
    scheme: str, bits: int | None = None, group_size: int | None = None
) -> tuple[int, int]:
    """(weight bits, group size; 0 = per channel) of an AutoRound scheme name such
    as W4A16, W2A16G64, NVFP4, FPW8A16, GGUF:Q4_K_M; 16 if the name says none."""
    name = scheme.upper()
    found = (16, 0)
    for key, value in _FP.items():
        if key in name:
            found = value
            break
    else:
        m = re.search(r"W(\d+)|Q(\d+)|INT(\d+)", name)
        if m:
            g = re.search(r"G(\d+)", name)
            bits_found = int(next(x for x in m.groups() if x))
            found = (bits_found, int(g.group(1)) if g else 128)
    return bits or found[0], found[1] if group_size is None else group_size


def estimate_checkpoint_bytes(model_dir: Path, bits: int, group_size: int) -> int:
    """A lower bound of the quantized checkpoint's size: every weight matrix at
    ``bits`` per value plus one 2-byte scale per group, embeddings and 1-D tensors
    at 2 bytes (or their stored size if smaller)."""
    stored = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}
    total = 0
    for file in _weights(model_dir):
        if file.suffix != ".safetensors":
            return 0  # .bin headers are not readable cheaply: no estimate
        for name, (dtype, shape) in safetensors_shapes(file, "--model").items():
            n = 1
            for d in shape:
                n *= d
            plain = len(shape) < 2 or "embed" in name or "lm_head" in name
            if plain or bits >= 16:
                total += n * min(stored.get(dtype, 1), 2)
            else:
                total += n * bits // 8 + (2 * n // group_size if group_size else 0)
    return total


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


def check_free_space(out_dir: str | os.PathLike, estimated_bytes: int) -> None:
    """Refuse when the file system ``out_dir`` will be on has less free space than
    ``estimated_bytes`` (checked at its nearest existing ancestor)."""
    place = Path(out_dir).expanduser().absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    free = shutil.disk_usage(place).free
    if estimated_bytes > free:
        raise DiskSpaceError(
            f"output {out_dir}: the checkpoint needs at least "
            f"{_gb(estimated_bytes)}, the file system of {place} has "
            f"{_gb(free)} free; free space or choose another output directory"
        )
