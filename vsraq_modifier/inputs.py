"""Checks of the files and settings a command is given, before any host loads them.

AutoRound and transformers meet a bad model directory, calibration file or output
place deep inside their own code: a missing local path becomes a hub lookup with a
network error, a truncated ``model.safetensors`` a ``SafetensorError`` traceback,
a ``.txt`` dataset a ``TypeError``, a full disk a failed write after every block is
tuned. Here each is named in one line (path, line or byte, what to do) while
nothing has been loaded yet. Every error is an :class:`InputError` (a
``ValueError``), so a command catches one class. Host-free: the stdlib,
``safetensors`` and, where a device or tokenizer is involved, torch/transformers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vsraq_modifier.guards import CalibrationDataError
from vsraq_modifier.output import OutputDirError

__all__ = [
    "CalibrationFileError",
    "DeviceError",
    "DiskSpaceError",
    "InputError",
    "ModelDirError",
    "OutputPlaceError",
    "SettingError",
    "TextFileError",
    "check_api_inputs",
    "check_cli_inputs",
    "check_dataset_token_ids",
    "check_device",
    "check_model_dir",
    "check_output_place",
    "check_text_file",
    "looks_local",
]


class InputError(ValueError):
    """A bad input, named in the message with what to do; nothing was loaded."""


class ModelDirError(InputError):
    """A model path that is not a loadable checkpoint directory."""


class TextFileError(InputError):
    """A text file that is missing, empty, binary or not UTF-8."""


class CalibrationFileError(CalibrationDataError, InputError):
    """A calibration file the host cannot read or cannot draw samples from."""


class SettingError(InputError):
    """A number setting (seqlen, nsamples, an environment variable) out of range."""


class OutputPlaceError(InputError, OutputDirError):
    """An output path where nothing can be written (a file, read-only, no access)."""


class DeviceError(InputError):
    """A torch device that does not exist on this machine."""


class DiskSpaceError(InputError, OutputDirError):
    """The output's file system has less free space than the checkpoint needs."""


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


def _safetensors_shapes(file: Path, what: str) -> dict[str, tuple[str, list[int]]]:
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
                _safetensors_shapes(file, what)
    if tokenizer and not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise ModelDirError(
            f"{name}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, "
            "...); save one next to the weights (tokenizer.save_pretrained)"
        )
    return folder


def decode_text(path: Path, what: str, error: type[InputError]) -> str:
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "no such file"
        raise error(f"{what} {path} is not a file ({kind}); pass a text file")
    raw = path.read_bytes()
    nul = raw.find(b"\0")
    if nul >= 0:
        raise error(
            f"{what} {path}: binary content (a NUL byte at byte {nul}); pass a UTF-8 "
            "text file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {path}: not UTF-8 (byte {e.start}: "
            f"{raw[e.start : e.start + 1]!r}); convert it (iconv -f latin1 -t utf-8)"
        ) from None
    if not text.strip():
        raise error(f"{what} {path} is empty; pass a file with text in it")
    return text


def check_text_file(path: str | os.PathLike, what: str = "--text") -> Path:
    """The absolute ``path`` of a non-empty UTF-8 text file."""
    file = Path(path).expanduser().absolute()
    decode_text(file, what, TextFileError)
    return file


def check_device(name: str) -> str:
    """``name`` if torch knows the device and this machine has it."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(
            f"--device {name!r}: not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cpu":
        return name
    module = getattr(torch, device.type, None)
    available = bool(module is not None and module.is_available())
    count = int(module.device_count()) if available else 0
    if not available or (device.index is not None and device.index >= count):
        have = f"{count} {device.type} device(s)" if available else f"no {device.type}"
        raise DeviceError(
            f"--device {name}: this machine has {have} (torch {torch.__version__}); "
            "use --device cpu, or install the torch build for the accelerator"
        )
    return name


def check_output_place(path: str | os.PathLike, what: str = "--out") -> Path:
    """The absolute ``path`` after checking that a directory can be created or
    written there (not a file; the nearest existing ancestor takes a new file).
    Nothing is created: a failed run leaves no empty folder behind."""
    import tempfile

    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputPlaceError(f"{what} {target} is a file; pass a directory")
    place = target
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise OutputPlaceError(
            f"{what} {target}: {place} is a file, so no directory can be made there"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".vsraq-write-test-", dir=place)
    except OSError as e:
        raise OutputPlaceError(
            f"{what} {target}: {place} is not writable ({e.strerror or e}); choose "
            "a directory you can write to"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return target


def _dataset_files(spec: str) -> Iterable[str]:
    """The local files in AutoRound's ``--dataset`` spec ``a.json,b:num=4,...``."""
    for part in spec.split(","):
        name = part.split(":")[0].strip()
        if name and (looks_local(name) or re.search(r"\.(json|jsonl|txt)$", name)):
            yield name


def check_cli_inputs(args: Any) -> None:
    """``auto-round --loss ...``: the model directory, local ``--dataset`` files,
    ``--seqlen`` / ``--nsamples``, and free space for ``--output_dir``, checked
    before AutoRound loads anything. Without ``--loss`` nothing is checked
    (auto-round runs unchanged)."""
    from vsraq_modifier.calibration import (
        check_calibration_file,
        check_calibration_settings,
    )

    algorithms = str(getattr(args, "algorithm", None) or "").lower().split(",")
    if getattr(args, "loss", None) is None and "vsraq" not in algorithms:
        return
    seqlen, nsamples = getattr(args, "seqlen", None), getattr(args, "nsamples", None)
    check_calibration_settings(seqlen, nsamples)
    model = getattr(args, "model", None) or getattr(args, "model_name", None)
    # AutoRound tokenizes any dataset with the model directory's tokenizer
    folder = check_model_dir(model, "--model", tokenizer=True) if model else None
    tokenizer = None
    for name in _dataset_files(str(getattr(args, "dataset", None) or "")):
        if tokenizer is None and folder is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        check_calibration_file(
            name, seqlen=seqlen, nsamples=nsamples, tokenizer=tokenizer
        )
    if folder is not None and getattr(args, "output_dir", None):
        from vsraq_modifier.disk import (
            check_free_space,
            estimate_checkpoint_bytes,
            scheme_bits,
        )

        bits, group = scheme_bits(
            str(getattr(args, "scheme", None) or "W4A16"),
            getattr(args, "bits", None),
            getattr(args, "group_size", None),
        )
        check_free_space(
            args.output_dir, estimate_checkpoint_bytes(folder, bits, group)
        )


def check_dataset_token_ids(dataset: Any, vocab_size: int | None) -> None:
    """Refuse in-memory calibration samples (token-id tensors, or dicts with
    ``input_ids``) holding an id outside ``0..vocab_size-1``."""
    if not isinstance(dataset, Sequence) or isinstance(dataset, str) or not vocab_size:
        return
    import torch

    for i, sample in enumerate(dataset):
        ids = sample.get("input_ids") if isinstance(sample, dict) else sample
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point():
            continue
        if not ids.numel():
            continue
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise CalibrationFileError(
                f"calibration sample {i} holds token id {bad}, outside the model's "
                f"vocabulary of {vocab_size} ids (0..{vocab_size - 1}); tokenize "
                "with the model's own tokenizer"
            )


def _vocab_size(model: Any) -> int | None:
    embed = getattr(model, "get_input_embeddings", lambda: None)()
    if embed is not None and hasattr(embed, "num_embeddings"):
        return int(embed.num_embeddings)
    config = getattr(model, "config", None)
    config = getattr(config, "get_text_config", lambda: config)()
    size = getattr(config, "vocab_size", None)
    return size if isinstance(size, int) else None


def check_api_inputs(model: Any, tokenizer: Any, kwargs: Mapping[str, Any]) -> None:
    """The Python API (``autoround(...)``): a model given as a local path is a
    checkpoint directory; ``seqlen`` / ``nsamples`` are usable; local dataset files
    are readable; in-memory samples hold only ids of the model's vocabulary."""
    from vsraq_modifier.calibration import (
        check_calibration_file,
        check_calibration_settings,
    )

    seqlen, nsamples = kwargs.get("seqlen"), kwargs.get("nsamples")
    check_calibration_settings(seqlen, nsamples)
    dataset, size = kwargs.get("dataset"), None
    if isinstance(model, (str, os.PathLike)):
        folder = check_model_dir(model, "model")
        if folder is not None:
            doc = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            size = doc.get("vocab_size") or (doc.get("text_config") or {}).get(
                "vocab_size"
            )
    else:
        size = _vocab_size(model)
    if isinstance(dataset, str):
        for name in _dataset_files(dataset):
            check_calibration_file(
                name, seqlen=seqlen, tokenizer=tokenizer, what="dataset"
            )
        return
    check_dataset_token_ids(dataset, size if isinstance(size, int) else None)
