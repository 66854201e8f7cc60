"""Checkpoint directories that are either complete or absent.

A run interrupted while the hosts write (AutoRound's shard writer saves each block
into the output directory during tuning; ``save_pretrained`` writes file after
file) leaves a directory that looks like a checkpoint and is not one. Here the
checkpoint is written into a hidden staging directory next to its destination
(``.<name>.partial-XXXX``) and renamed into place only once it is complete; on an
error or KeyboardInterrupt the staging directory is removed and the destination is
untouched. A process killed outright (SIGKILL, power loss) can leave a
``.<name>.partial-*`` directory behind; its name says what it is, delete it.

An existing non-empty destination is refused before any work starts (it may hold
another checkpoint, whose leftover shards would mix with the new ones) unless
``overwrite`` is given; then the old directory is replaced only when the new one is
complete. Writability is checked up front by creating a file, which also catches
read-only filesystems and root-owned paths.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "OutputDirError",
    "check_output_dir",
    "publish",
    "staged_output",
    "staging",
]


class OutputDirError(OSError):
    """The output directory cannot receive a checkpoint (named in the message)."""


def _listing(path: Path, shown: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    more = f", ... ({len(names)} entries)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _check_writable(directory: Path, target: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".vsraq-write-test-", dir=directory)
    except OSError as e:
        raise OutputDirError(
            f"cannot write the checkpoint to {target}: {directory} is not writable "
            f"({e.strerror or e}). Choose an output directory you can write to."
        ) from None
    os.close(fd)
    os.unlink(probe)


#: how to replace an existing output, by entry point (the auto-round command has
#: no overwrite flag)
OVERWRITE_HINTS = {
    "api": "pass overwrite=True to replace it once the new checkpoint is complete",
    "cli": "the auto-round command has no overwrite option",
}


def check_output_dir(
    path: str | os.PathLike, *, overwrite: bool = False, entry: str = "api"
) -> Path:
    """``path`` as a Path, after checking that a checkpoint can be written there:
    not a file, empty or absent (or ``overwrite``), in a writable place.
    ``entry``: "api" or "cli", for the hint on replacing an existing output."""
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputDirError(
            f"output {target} is a file, not a directory; choose another path"
        )
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputDirError(
            f"output directory {target} exists and is not empty "
            f"({_listing(target)}); another checkpoint's files would mix with the "
            "new one. Choose another directory or remove it "
            f"({OVERWRITE_HINTS[entry]})."
        )
    ancestor = _existing_ancestor(target.parent)
    if not ancestor.is_dir():
        raise OutputDirError(
            f"cannot create {target}: {ancestor} is a file, not a directory"
        )
    _check_writable(ancestor, target)
    return target


def _staging_dir(target: Path) -> Path:
    """A new hidden staging directory next to ``target`` (parents created)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def _sigterm_as_exit(_signum: int, _frame: object) -> None:
    raise SystemExit(128 + signal.SIGTERM)


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A hidden staging directory next to ``target`` for the duration; always
    removed at the end (publish what you want to keep before leaving the block).
    SIGTERM (``kill``, a scheduler's time limit) becomes ``SystemExit(143)``
    meanwhile, so that the staging directory is removed then too."""
    stage = _staging_dir(target)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_exit) if main else None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if main:
            signal.signal(signal.SIGTERM, previous)


def publish(source: Path, target: Path, *, overwrite: bool = False) -> Path:
    """Rename the complete checkpoint ``source`` to ``target`` (same filesystem:
    atomic). An existing ``target`` is replaced only if it is empty or
    ``overwrite``; else the new checkpoint is moved to a visible
    ``<name>.new-XXXX/<name>`` beside it and the error says where."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        elif overwrite and target.is_dir():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)
            )
            target.rename(old / target.name)
        else:
            kept = Path(
                tempfile.mkdtemp(prefix=f"{target.name}.new-", dir=target.parent)
            )
            source.rename(kept / target.name)
            raise OutputDirError(
                f"{target} appeared while the checkpoint was written; the new "
                f"checkpoint is complete in {kept / target.name}: move it where you "
                "want it"
            )
    source.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged_output(
    final_dir: str | os.PathLike, *, overwrite: bool = False
) -> Iterator[Path]:
    """Write a checkpoint into the yielded staging directory; it becomes
    ``final_dir`` when the block exits normally and is removed on any exception
    (KeyboardInterrupt included), leaving ``final_dir`` as it was.

    Example::

        with staged_output("out/qwen3-w4a16") as tmp:
            oneshot(model=model, recipe=recipe, dataset=ds, output_dir=str(tmp))
    """
    target = check_output_dir(final_dir, overwrite=overwrite)
    with staging(target) as stage:
        yield stage
        publish(stage, target, overwrite=overwrite)
