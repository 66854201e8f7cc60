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
    "check_seed",
    "check_not_empty",
    "check_output_place",
    "check_text_file",
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


def check_not_empty(path: str | os.PathLike, what: str) -> None:
    """An empty path means the current directory to pathlib: refuse it (usually
    an unset shell variable, ``--out "$OUT"``)."""
    if not str(path).strip():
        raise InputError(f"{what} is an empty path; pass the path itself")


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
    check_not_empty(path, what)
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

    check_not_empty(path, what)
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
    from vsraq_modifier.checkpoint_dir import looks_local

    for part in spec.split(","):
        name = part.split(":")[0].strip()
        if name and (looks_local(name) or re.search(r"\.(json|jsonl|txt)$", name)):
            yield name


def _check_cli_settings(args: Any) -> None:
    """What AutoRound would refuse only with a traceback (or take as the working
    directory): empty paths, batch size, learning rate, dataset options, and the
    scheme and format names (checked against AutoRound's own lists)."""
    import math

    model = getattr(args, "model", None)
    for flag, value in (
        ("--model", getattr(args, "model_name", None) if model is None else model),
        ("--dataset", getattr(args, "dataset", None)),
        ("--output_dir", getattr(args, "output_dir", None)),
    ):
        if value is not None:
            check_not_empty(value, flag)
    batch = getattr(args, "batch_size", None)
    if isinstance(batch, int) and batch < 1:
        raise SettingError(f"--batch_size {batch}: use 1 or more samples per step")
    lr = getattr(args, "lr", None)
    if isinstance(lr, (int, float)) and not (math.isfinite(lr) and lr > 0):
        raise SettingError(f"--lr {lr}: the learning rate must be a finite number > 0")
    for part in str(getattr(args, "dataset", None) or "").split(","):
        for option in part.split(":")[1:]:
            key, _, value = option.partition("=")
            if key == "num" and not (value.isdigit() and int(value) > 0):
                raise SettingError(
                    f"--dataset {part}: num={value} is not a number of samples >= 1"
                )
    from auto_round.schemes import PRESET_SCHEMES
    from auto_round.utils import SUPPORTED_FORMATS

    scheme = str(getattr(args, "scheme", None) or "W4A16")
    if getattr(args, "avg_bits", None) is None and scheme.upper() not in PRESET_SCHEMES:
        raise SettingError(
            f"--scheme {scheme}: not an AutoRound scheme; one of "
            + ", ".join(list(PRESET_SCHEMES)[:12])
            + ", ... (auto-round list format)"
        )
    formats = str(getattr(args, "format", None) or "auto_round")
    for name in formats.lower().replace(" ", "").split(","):
        if name not in SUPPORTED_FORMATS:
            raise SettingError(
                f"--format {name}: not an AutoRound export format; e.g. auto_round, "
                "llm_compressor, fake (auto-round list format)"
            )


def check_cli_inputs(args: Any) -> None:
    """``auto-round --loss ...``: the model directory, local ``--dataset`` files,
    ``--seqlen`` / ``--nsamples`` and other settings, and free space for
    ``--output_dir``, checked before AutoRound loads anything. Without ``--loss``
    nothing is checked (auto-round runs unchanged)."""
    from vsraq_modifier.calibration import (
        check_calibration_file,
        check_calibration_settings,
    )
    from vsraq_modifier.checkpoint_dir import check_model_dir

    algorithms = str(getattr(args, "algorithm", None) or "").lower().split(",")
    if getattr(args, "loss", None) is None and "vsraq" not in algorithms:
        return
    seqlen, nsamples = getattr(args, "seqlen", None), getattr(args, "nsamples", None)
    check_calibration_settings(seqlen, nsamples)
    check_seed(getattr(args, "seed", None))
    _check_cli_settings(args)
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
    ``input_ids``) that are not integer ids of shape [batch, seqlen], or hold an
    id outside ``0..vocab_size-1`` (a host error deep in the first forward)."""
    if not isinstance(dataset, Sequence) or isinstance(dataset, str):
        return
    import torch

    for i, sample in enumerate(dataset):
        ids = sample.get("input_ids") if isinstance(sample, dict) else sample
        if not isinstance(ids, torch.Tensor):
            continue  # texts and other records: the host's to read
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise CalibrationFileError(
                f"calibration sample {i} is a {str(ids.dtype).removeprefix('torch.')} "
                "tensor; token ids are integers (tokenizer output, torch.long)"
            )
        if ids.dim() != 2:
            raise CalibrationFileError(
                f"calibration sample {i} has shape {tuple(ids.shape)}; pass token "
                "ids of shape [1, seqlen] (e.g. ids[None] for a 1-D tensor)"
            )
        if not vocab_size or not ids.numel():
            continue
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise CalibrationFileError(
                f"calibration sample {i} holds token id {bad}, outside the model's "
                f"vocabulary of {vocab_size} ids (0..{vocab_size - 1}); tokenize "
                "with the model's own tokenizer"
            )


def check_seed(seed: Any, what: str = "--seed") -> None:
    """A seed numpy accepts (0..2**32-1): AutoRound seeds numpy with it."""
    if isinstance(seed, int) and not 0 <= seed < 2**32:
        raise SettingError(f"{what} {seed}: use a seed in 0..{2**32 - 1}")


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
    from vsraq_modifier.checkpoint_dir import check_model_dir

    seqlen, nsamples = kwargs.get("seqlen"), kwargs.get("nsamples")
    check_calibration_settings(seqlen, nsamples)
    check_seed(kwargs.get("seed"), "seed=")
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
