"""The auto-round command's plugin side, without a run: a full disk while the
checkpoint is written is one line."""

from __future__ import annotations

import errno

from safetensors import SafetensorError

from vsraq_modifier.integrations.autoround.cli import write_failure


def test_a_full_disk_while_writing_is_one_line() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert "no space left" in write_failure(full, "out")
    assert "--output_dir" in write_failure(
        SafetensorError("I/O error: os error 28"), "o"
    )
    assert write_failure(OSError(errno.EACCES, "denied"), "out") is None
    assert write_failure(RuntimeError("other"), "out") is None
