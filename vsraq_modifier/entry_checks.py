"""The input checks of each entry point, run before a host loads anything:
``auto-round --loss ...`` (:func:`check_cli_inputs`) and the Python API
``autoround(...)`` (:func:`check_api_inputs`). The checks themselves live with
what they check (:mod:`vsraq_modifier.inputs`, :mod:`vsraq_modifier.calibration`,
:mod:`vsraq_modifier.checkpoint_dir`, :mod:`vsraq_modifier.disk`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from vsraq_modifier.calibration import (
    check_calibration_file,
    check_calibration_settings,
)
from vsraq_modifier.checkpoint_dir import check_model_dir
from vsraq_modifier.inputs import (
    SettingError,
    check_dataset_token_ids,
    check_not_empty,
    check_seed,
)

__all__ = ["check_api_inputs", "check_cli_inputs"]


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
