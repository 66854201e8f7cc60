"""The checks ``vsraq demo`` runs before it creates DIR or tunes anything.

Everything that would otherwise fail minutes later (after both quantizations) or
in a host's traceback is checked here first: paths (made absolute where the
command starts: the runs change the working directory), the model directory, both
texts, the calibration windows, the held-out token ids, DIR's place and free space.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = [
    "DemoInputError",
    "absolute",
    "calibration_windows",
    "check_inputs",
    "check_model_config",
    "check_out",
    "check_space",
    "heldout_ids",
]


class DemoInputError(ValueError):
    """An input the demo cannot use (named in the message)."""


def check_out(out: Path, overwrite: bool) -> None:
    from vsraq_modifier.inputs import check_output_place

    check_output_place(out, "--out")  # not a file, writable: nothing created yet
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DemoInputError(
            f"--out {out} is not empty; pass --overwrite to replace the demo's "
            "outputs in it, or choose a new directory"
        )


def absolute(path: str | Path) -> Path:
    """``path`` made absolute against the directory the command was started in."""
    return Path(path).expanduser().absolute()


def check_inputs(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    from vsraq_modifier import data
    from vsraq_modifier.checkpoint_dir import check_model_dir
    from vsraq_modifier.inputs import check_not_empty, check_text_file

    # absolute before anything changes the working directory (the quantizations
    # run inside DIR/.work)
    def given(value: str | None, what: str, default: Path) -> Path:
        if value is None:
            return default
        check_not_empty(value, what)  # "" is refused, not taken as "not given"
        return absolute(value)

    model = check_model_dir(
        given(args.model, "--model", data.shipped_model_dir()),
        "--model",
        tokenizer=True,
        hub=False,
    )
    assert model is not None  # hub=False: always a local directory
    calib = check_text_file(
        given(
            args.calibration_text, "--calibration-text", data.calibration_text_path()
        ),
        "--calibration-text",
    )
    text = check_text_file(
        given(args.text, "--text", data.heldout_text_path()), "--text"
    )
    if calib.samefile(text):
        raise DemoInputError(
            f"--calibration-text and --text are the same file ({text}): the "
            "comparison would be measured on the text it was tuned on; pass a "
            "held-out text that the calibration text does not contain"
        )
    check_model_config(args, model)
    return model, calib, text


def check_model_config(args: argparse.Namespace, model: Path) -> None:
    """A full-precision model that takes the demo's sequence lengths."""
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method:
        raise DemoInputError(
            f"--model {model} is already quantized ({method}); the demo quantizes "
            "a full-precision model: pass the one this checkpoint came from"
        )
    limit = config.get("max_position_embeddings")
    for flag, n in (("--seqlen", args.seqlen), ("--eval-seq-len", args.eval_seq_len)):
        if isinstance(limit, int) and n > limit:
            raise DemoInputError(
                f"{flag} {n} exceeds the model's max_position_embeddings ({limit}); "
                f"pass {flag} {limit} or less"
            )


def check_space(args: argparse.Namespace, model: Path, out: Path, runs: int) -> None:
    """Both checkpoints must fit in DIR's file system (checked before tuning)."""
    from vsraq_modifier.disk import (
        check_free_space,
        estimate_checkpoint_bytes,
        scheme_bits,
    )
    from vsraq_modifier.runs import SCHEMES

    bits, group = scheme_bits(SCHEMES[args.scheme].autoround)
    check_free_space(out, runs * estimate_checkpoint_bytes(model, bits, group))


def calibration_windows(args: argparse.Namespace, model: Path, calib: Path) -> list:
    """The calibration windows (tokenized before DIR is touched)."""
    from vsraq_modifier.calibration import (
        calibration_samples,
        split_tokens,
        text_token_ids,
    )

    ids = split_tokens(text_token_ids(calib, model), "calibration")
    try:
        return calibration_samples(
            ids, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed
        )
    except ValueError as e:
        raise DemoInputError(
            f"--calibration-text {calib} (its calibration part): {e}"
        ) from None


def heldout_ids(args: argparse.Namespace, model_dir: Path, text: Path) -> Any:
    """The report's token ids, read before tuning (too short a text would
    otherwise fail after both quantizations)."""
    from vsraq_modifier.metrics.loading import load_token_ids

    ids = load_token_ids(text, model_dir, args.eval_tokens, what="--text")
    if ids.numel() < 2:
        raise DemoInputError(
            f"--text {text} has {ids.numel()} token(s); the report needs at least 2"
        )
    return ids
