"""AutoRound's ``quantize_and_save`` with a checkpoint that is complete or absent.

AutoRound writes ``OUTPUT_DIR/<model>-w4g128/`` (its export directory), and with
immediate saving its shard writer fills it block by block *during tuning*: an
interrupted run leaves a directory that looks like a checkpoint. Here

1. the export directory's name is worked out before anything runs (AutoRound's
   own ``_get_export_dir`` after ``post_init``), and an existing non-empty one is
   refused unless ``overwrite=True``, as is an output place that is not writable;
2. AutoRound runs with ``OUTPUT_DIR/.<name>.partial-XXXX`` as its output
   directory; on success the export directory is renamed to its final place, on
   any exception (KeyboardInterrupt included) the staging directory is removed.

With ``AR_RESUME_DIR`` set (AutoRound resumes from shards a crashed run left in
the export directory) the save is not staged, so that resuming keeps working.
See :mod:`vsraq_modifier.output`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loguru import logger

from vsraq_modifier.output import check_output_dir, publish, staging_dir

__all__ = ["stage_saves", "staged_quantize_and_save", "staged_saves_in_cli"]


def _moved(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str) and value.startswith(old):
        return new + value[len(old) :]
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    return value


def staged_quantize_and_save(
    ar: Any,
    original: Callable[..., Any],
    output_dir: str = "tmp_autoround",
    format: str | None = None,  # noqa: A002 - AutoRound's name
    *args: Any,
    overwrite: bool = False,
    **kwargs: Any,
) -> Any:
    """``original(output_dir, format, ...)`` (AutoRound's bound
    ``quantize_and_save``), staged as the module docstring says."""
    if os.environ.get("AR_RESUME_DIR"):
        logger.info("vsraq: AR_RESUME_DIR set: saving into the output dir unstaged")
        return original(output_dir, format, *args, **kwargs)
    out = Path(output_dir).expanduser().absolute()
    check_output_dir(out, overwrite=True)  # not a file; its parent writable
    stage = staging_dir(out)
    checked: list[Path] = []
    quantize = ar.quantize

    def checked_quantize(*q_args: Any, **q_kwargs: Any) -> Any:
        # AutoRound has run post_init and set its export dir (under the staging
        # dir); nothing is calibrated or tuned yet
        rel = Path(ar.output_dir).absolute().relative_to(stage)
        checked.append(check_output_dir(out / rel, overwrite=overwrite))
        return quantize(*q_args, **q_kwargs)

    ar.quantize = checked_quantize
    try:
        result = original(str(stage), format, *args, **kwargs)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        ar.__dict__.pop("quantize", None)
    if not checked:
        shutil.rmtree(stage, ignore_errors=True)
        raise RuntimeError("vsraq: AutoRound saved without quantizing; nothing staged")
    final = checked[0]
    produced = stage / final.relative_to(out)
    publish(produced, final, overwrite=overwrite)  # on error: kept, and named
    shutil.rmtree(stage, ignore_errors=True)
    ar.output_dir = str(final)
    with contextlib.suppress(AttributeError):
        ar.compress_context.output_dir = str(final)
    logger.info(f"vsraq: checkpoint complete in {final}")
    if isinstance(result, tuple):
        return tuple(_moved(v, str(produced), str(final)) for v in result)
    return result


def stage_saves(ar: Any) -> Any:
    """``ar`` with its ``quantize_and_save`` staged (``overwrite=`` accepted)."""
    original = ar.quantize_and_save
    if getattr(original, "_vsraq_staged", False):
        return ar

    @functools.wraps(original)
    def quantize_and_save(*args: Any, **kwargs: Any) -> Any:
        return staged_quantize_and_save(ar, original, *args, **kwargs)

    quantize_and_save._vsraq_staged = True  # type: ignore[attr-defined]
    ar.quantize_and_save = quantize_and_save
    return ar


@contextlib.contextmanager
def staged_saves_in_cli() -> Iterator[None]:
    """Stage every ``quantize_and_save`` for the duration (the ``auto-round``
    command builds its compressor itself, out of reach of :func:`stage_saves`)."""
    from auto_round.compressors.base import BaseOrchestrator

    original = BaseOrchestrator.quantize_and_save

    def quantize_and_save(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = original.__get__(self, type(self))
        return staged_quantize_and_save(self, bound, *args, **kwargs)

    BaseOrchestrator.quantize_and_save = quantize_and_save
    try:
        yield
    finally:
        BaseOrchestrator.quantize_and_save = original
