"""Calibration samples for quantizing, and the validation split carved from them.

The shipped calibration text is cut in two by token position: the first
``CALIBRATION_SHARE`` of its tokens is where calibration windows are drawn from
(``part="calibration"``); the rest is a validation split (``part="validation"``)
for choosing defaults and trying objective changes without touching the held-out
text, which is kept for the reported numbers only.

Calibration files are checked here before a host reads them
(:func:`check_calibration_file`): AutoRound's local loader reads ``.json`` /
``.jsonl`` and fails on anything else with a ``TypeError`` or ``exit(-1)``.

Windows are whole, non-overlapping ``seqlen``-token slices at multiples of
``seqlen``; which ones is drawn from ``seed``, so two quantization runs with the
same seed see the same samples (and different seeds different ones).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Literal

import torch

from vsraq_modifier.inputs import CalibrationFileError, SettingError, decode_text

__all__ = [
    "CALIBRATION_SHARE",
    "Part",
    "calibration_samples",
    "check_calibration_file",
    "check_calibration_settings",
    "split_tokens",
    "text_token_ids",
]

#: share of the calibration text's tokens that calibration windows come from
CALIBRATION_SHARE = 0.8

Part = Literal["calibration", "validation"]


def text_token_ids(text_path: str | Path, tokenizer_path: str | Path) -> torch.Tensor:
    """Token ids [N] of a UTF-8 text file, no special tokens added."""
    from vsraq_modifier.metrics.loading import load_token_ids

    return load_token_ids(text_path, tokenizer_path)


def split_tokens(ids: torch.Tensor, part: Part) -> torch.Tensor:
    """The calibration (first ``CALIBRATION_SHARE``) or validation (the rest) part."""
    cut = int(ids.numel() * CALIBRATION_SHARE)
    if part == "calibration":
        return ids[:cut]
    if part == "validation":
        return ids[cut:]
    raise ValueError(f"part={part!r}: use 'calibration' or 'validation'")


def calibration_samples(
    ids: torch.Tensor, *, nsamples: int, seqlen: int, seed: int
) -> list[torch.Tensor]:
    """``nsamples`` windows [1, seqlen] of ``ids``, chosen by ``seed``, in the
    order drawn (AutoRound's ``dataset=`` accepts this list)."""
    if nsamples < 1 or seqlen < 2:
        raise ValueError(f"nsamples={nsamples}, seqlen={seqlen}: need >= 1 and >= 2")
    available = ids.numel() // seqlen
    if nsamples > available:
        raise ValueError(
            f"{nsamples} windows of {seqlen} tokens requested, the text has "
            f"{available} ({ids.numel()} tokens); lower --nsamples or --seqlen"
        )
    starts = random.Random(seed).sample(range(available), nsamples)
    return [
        ids[s * seqlen : (s + 1) * seqlen].reshape(1, seqlen).clone() for s in starts
    ]


def check_calibration_settings(seqlen: int | None, nsamples: int | None) -> None:
    """``seqlen`` >= 2 (a token and its next) and ``nsamples`` >= 1, when given."""
    if seqlen is not None and seqlen < 2:
        raise SettingError(
            f"--seqlen {seqlen}: a calibration sample needs at least 2 tokens (a "
            "token and the next one to predict); use e.g. --seqlen 2048"
        )
    if nsamples is not None and nsamples < 1:
        raise SettingError(
            f"--nsamples {nsamples}: at least 1 calibration sample is needed; use "
            "e.g. --nsamples 128"
        )


def _record_text(record: Any) -> Any:
    """What AutoRound's local loader takes from one record (calib_dataset.py)."""
    if isinstance(record, dict) and len(record) == 1:
        return next(iter(record.values()))
    if isinstance(record, dict):
        return record.get("text", record.get("input_ids"))
    return record


def _records(text: str, file: Path, what: str) -> list[tuple[str, Any]]:
    """(where, record) of a .json or .jsonl file, as AutoRound's loader reads it."""
    if file.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                if n == text.count("\n") + 1:  # after the final newline
                    continue
                raise CalibrationFileError(
                    f"{what} {file}: line {n} is blank, and AutoRound parses every "
                    "line as JSON; remove the blank line(s)"
                )
            try:
                out.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise CalibrationFileError(
                    f"{what} {file}: line {n} is not JSON ({e.msg} at column "
                    f'{e.colno}); one JSON string or {{"text": ...}} per line'
                ) from None
        return out
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CalibrationFileError(
            f"{what} {file}: invalid JSON at line {e.lineno} column {e.colno} "
            f'({e.msg}); a JSON list of strings or of {{"text": ...}} records'
        ) from None
    if isinstance(doc, dict):
        doc = list(doc.values())
    if not isinstance(doc, list):
        raise CalibrationFileError(
            f"{what} {file}: holds a JSON {type(doc).__name__}, not a list of texts; "
            'write a list of strings or of {"text": ...} records'
        )
    return [(f"record {i} (of {len(doc)})", r) for i, r in enumerate(doc, 1)]


def check_calibration_file(
    path: str | os.PathLike,
    *,
    seqlen: int | None = None,
    nsamples: int | None = None,
    tokenizer: Any = None,
    plain_text: bool = False,
    what: str = "--dataset",
) -> list[str]:
    """The texts of a calibration file, after checking what the host would trip
    over. ``.json`` / ``.jsonl`` as AutoRound reads them (``plain_text``: a ``.txt``
    or any other file is one text, as ``vsraq demo`` reads it). With a
    ``tokenizer``, at least one text must reach ``seqlen`` tokens (AutoRound drops
    shorter ones)."""
    check_calibration_settings(seqlen, nsamples)
    file = Path(path).expanduser().absolute()
    if not plain_text and file.suffix not in (".json", ".jsonl"):
        raise CalibrationFileError(
            f"{what} {file}: AutoRound reads only .json (a list of strings or "
            '{"text": ...} records) or .jsonl (one per line), not '
            f"'{file.suffix or 'no extension'}'; convert it to a JSON list of "
            "texts, e.g. one per paragraph"
        )
    text = decode_text(file, what, CalibrationFileError)
    if plain_text:
        return [text]
    texts = []
    for where, record in _records(text, file, what):
        value = _record_text(record)
        if not isinstance(value, str):
            raise CalibrationFileError(
                f"{what} {file}: {where} is {json.dumps(value)[:40]}, not a text; "
                'each record must be a string or {"text": "..."}'
            )
        texts.append(value.rstrip())
    if not any(texts):
        raise CalibrationFileError(
            f"{what} {file} holds no text ({len(texts)} empty records); add texts"
        )
    if tokenizer is not None and seqlen is not None:
        lengths = [
            len(tokenizer(t, truncation=True, max_length=seqlen)["input_ids"])
            for t in texts
        ]
        if max(lengths) < seqlen:
            raise CalibrationFileError(
                f"{what} {file}: every text is shorter than --seqlen {seqlen} tokens "
                f"(longest: {max(lengths)}), and AutoRound drops shorter texts; "
                + (
                    f"lower --seqlen to {max(lengths)} or add longer texts"
                    if max(lengths) >= 2
                    else "add longer texts"
                )
            )
    return texts
