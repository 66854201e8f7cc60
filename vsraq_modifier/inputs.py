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

import os
from collections.abc import Sequence
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
