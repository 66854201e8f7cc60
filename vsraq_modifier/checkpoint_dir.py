"""Checkpoint directories checked before transformers or a host loads them.

A local path that does not exist becomes a hub lookup (a network error offline);
a truncated ``model.safetensors`` a ``SafetensorError``; a folder without weights
or tokenizer a misleading host message ("provide more data"). The safetensors
headers are read directly (8-byte length + JSON, checked against the file's
size exactly as ``safe_open`` checks them) without mapping the file, so even a
checkpoint of hundreds of GB is checked in microseconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vsraq_modifier.inputs import ModelDirError, check_not_empty

__all__ = ["TOKENIZER_FILES", "check_model_dir", "looks_local", "safetensors_shapes"]

#: files of which a saved tokenizer has at least one
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
)
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.pt")


def looks_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is meant as a local path rather than a hub id ``org/name``:
    it exists, is absolute, starts with ``.`` or ``~``, or has more than one
    separator (a hub id has exactly one ``/``)."""
    s = str(path)
    return (
        os.path.exists(s)
        or os.path.isabs(s)
        or s.startswith((".", "~"))
        or "\\" in s
        or s.count("/") > 1
    )


def _weights(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelDirError(
                f"{index}: not a valid safetensors index ({e}); re-save the "
                "checkpoint (save_pretrained)"
            ) from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelDirError(
                f"{index} lists {len(missing)} shard(s) that are not there "
                f"({', '.join(missing[:3])}); copy the whole checkpoint"
            )
        return [folder / s for s in shards]
    found: list[Path] = []
    for pattern in _WEIGHT_GLOBS:
        found += sorted(folder.glob(pattern))
    return found


def _header(file: Path) -> tuple[dict[str, Any], str | None]:
    """The safetensors header of ``file`` and what is wrong with it (None: the
    header is valid and its tensors cover the file exactly, as ``safe_open``
    requires). Reads the header only: no mmap, cheap for any checkpoint size."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return {}, "header too small"
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100 * 2**20:
            return {}, "header too large"
        try:
            doc = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return {}, f"header is not JSON ({e})"
    if not isinstance(doc, dict):
        return {}, "header is not a JSON object"
    tensors = {k: v for k, v in doc.items() if k != "__metadata__"}
    try:
        ends = sorted(
            (int(v["data_offsets"][0]), int(v["data_offsets"][1]))
            for v in tensors.values()
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return {}, "header entries without data_offsets"
    covered = 0
    for start, end in ends:
        if start != covered or end < start:
            return {}, "tensor offsets overlap or leave gaps"
        covered = end
    if covered != size - 8 - n:
        return {}, "incomplete metadata, file not fully covered"
    return tensors, None


def _named(what: str, path: Path) -> str:
    """``--model /p``, or ``--quantized q=/p`` for a ``what`` ending in ``=``."""
    return f"{what}{path}" if what.endswith("=") else f"{what} {path}"


def safetensors_shapes(file: Path, what: str) -> dict[str, tuple[str, list[int]]]:
    """tensor name -> (dtype, shape) from the header, after checking the header
    against the file's length (truncated, random or empty files fail here)."""
    tensors, problem = _header(file)
    if problem:
        raise ModelDirError(
            f"{_named(what, file.parent)}: {file.name} is not a readable "
            f"safetensors file ({problem}; {file.stat().st_size} bytes): "
            "truncated or damaged. Copy or download it again"
        )
    return {
        k: (str(v.get("dtype")), list(v.get("shape", []))) for k, v in tensors.items()
    }


def _check_model_type(doc: dict, config: Path, what: str) -> None:
    """transformers knows the config's ``model_type`` (or the checkpoint brings
    its own code: ``auto_map``)."""
    if "auto_map" in doc:
        return
    import transformers
    from transformers import CONFIG_MAPPING

    if doc["model_type"] not in CONFIG_MAPPING:
        raise ModelDirError(
            f"{_named(what, config.parent)}: config.json has model_type "
            f"{doc['model_type']!r}, not one that transformers "
            f"{transformers.__version__} knows; fix the config, or update "
            "transformers if the model family is newer"
        )


def check_model_dir(
    path: str | os.PathLike,
    what: str = "--model",
    *,
    tokenizer: bool = False,
    weights: bool = True,
    hub: bool = True,
) -> Path | None:
    """The absolute checkpoint directory ``path`` after checking what a host would
    trip over: it exists and is a folder, ``config.json`` is a JSON object with a
    ``model_type``, weights are there and their safetensors headers match the files,
    and (``tokenizer``) tokenizer files are there. None for a hub id (``hub`` and
    not :func:`looks_local`); with ``hub=False`` every path is a local one."""
    check_not_empty(path, what)
    if hub and not looks_local(path):
        return None
    folder = Path(path).expanduser().absolute()
    name = _named(what, folder)
    if not folder.exists():
        raise ModelDirError(
            f"{name} is not a directory (no such path"
            + ("; a local path, so no hub lookup" if hub else "")
            + "); pass a checkpoint directory"
            + (" or a hub id such as org/name" if hub else "")
        )
    if not folder.is_dir():
        raise ModelDirError(
            f"{name} is a file, not a checkpoint directory; pass the folder "
            "that holds config.json and the weights"
        )
    config = folder / "config.json"
    if not config.is_file():
        raise ModelDirError(
            f"{name}: no config.json; pass a checkpoint directory written by "
            "save_pretrained, llm-compressor or AutoRound"
        )
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ModelDirError(
            f"{name}: config.json is not UTF-8 (byte {e.start}); re-save the checkpoint"
        ) from None
    except json.JSONDecodeError as e:
        raise ModelDirError(
            f"{name}: config.json: invalid JSON at line {e.lineno} column {e.colno} "
            f"({e.msg}); repair or re-save the config"
        ) from None
    if not isinstance(doc, dict) or "model_type" not in doc:
        raise ModelDirError(
            f"{name}: config.json has no model_type, not a transformers config; "
            "re-save the checkpoint (save_pretrained)"
        )
    _check_model_type(doc, config, what)
    if weights:
        files = _weights(folder)
        if not files:
            raise ModelDirError(
                f"{name}: config.json but no weights (model.safetensors or "
                "pytorch_model.bin); copy the weight files too"
            )
        for file in files:
            if file.suffix == ".safetensors":
                safetensors_shapes(file, what)
    if tokenizer and not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise ModelDirError(
            f"{name}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, "
            "...); save one next to the weights (tokenizer.save_pretrained)"
        )
    return folder
