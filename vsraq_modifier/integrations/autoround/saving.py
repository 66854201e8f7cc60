"""AutoRound's ``quantize_and_save`` with a checkpoint that is complete or absent.

AutoRound writes ``OUTPUT_DIR/<model>-w4g128/`` (its export directory), and with
immediate saving its shard writer fills it block by block *during tuning*: an
interrupted run leaves a directory that looks like a checkpoint. Here

1. the export directory's name is worked out before anything runs (AutoRound's
   export directory, set in ``post_init``), and an existing non-empty one is
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
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loguru import logger

from vsraq_modifier.integrations.autoround import seams
from vsraq_modifier.output import check_output_dir, publish, staging

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
    entry: str = "api",
    **kwargs: Any,
) -> Any:
    """``original(output_dir, format, ...)`` (AutoRound's bound
    ``quantize_and_save``), staged as the module docstring says; ``entry``
    ("api" or "cli") picks the hint of the "output exists" error."""
    if os.environ.get("AR_RESUME_DIR"):
        logger.info("vsraq: AR_RESUME_DIR set: saving into the output dir unstaged")
        return original(output_dir, format, *args, **kwargs)
    out = Path(output_dir).expanduser().absolute()
    check_output_dir(out, overwrite=True)  # not a file; its parent writable
    checked: list[Path] = []
    with staging(out) as stage:

        def check_export_dir() -> None:
            # AutoRound has run post_init and set its export dir (under the
            # staging dir); nothing is calibrated or tuned yet
            rel = Path(ar.output_dir).absolute().relative_to(stage)
            checked.append(
                check_output_dir(out / rel, overwrite=overwrite, entry=entry)
            )

        with seams.hook_quantize(ar, check_export_dir):
            result = original(str(stage), format, *args, **kwargs)
        if not checked:
            raise RuntimeError(
                "vsraq: AutoRound saved without quantizing; nothing staged"
            )
        final = checked[0]
        produced = stage / final.relative_to(out)
        publish(produced, final, overwrite=overwrite)
    ar.output_dir = str(final)
    with contextlib.suppress(AttributeError):
        ar.compress_context.output_dir = str(final)
    logger.info(f"vsraq: checkpoint complete in {final}")
    if isinstance(result, tuple):
        return tuple(_moved(v, str(produced), str(final)) for v in result)
    return result


def stage_saves(ar: Any) -> Any:
    """``ar`` with its ``quantize_and_save`` staged (``overwrite=`` accepted)."""
    if not seams.is_save_patched(ar):
        seams.patch_instance_save(ar, staged_quantize_and_save)
    return ar


@contextlib.contextmanager
def staged_saves_in_cli() -> Iterator[None]:
    """Stage every ``quantize_and_save`` for the duration (the ``auto-round``
    command builds its compressor itself, out of reach of :func:`stage_saves`)."""

    def save(ar: Any, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return staged_quantize_and_save(ar, original, *args, entry="cli", **kwargs)

    with seams.patch_orchestrator_save(save):
        yield
