"""Staging of ``quantize_and_save`` on its own, with a small compressor that keeps
AutoRound's save protocol (``quantize`` sets the export directory under the output
directory, then the files are written there; a real AutoRound run:
tests/integration/autoround/test_autoround_export.py): the export directory is
checked before tuning, published when complete, removed on an error, left
unstaged for ``AR_RESUME_DIR``, and the returned paths point at the final place."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsraq_modifier.integrations.autoround.saving import stage_saves
from vsraq_modifier.output import OutputDirError


class Compressor:
    """AutoRound's save protocol, at small scale."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.output_dir = ""
        self.tuned = False

    def quantize(self) -> None:
        self.tuned = True

    def quantize_and_save(self, output_dir: str = "tmp", format: str | None = None):  # noqa: A002
        self.output_dir = str(Path(output_dir) / "tiny-w4g128")
        self.quantize()
        export = Path(self.output_dir)
        export.mkdir(parents=True)
        (export / "config.json").write_text("{}")
        if self.fail:
            raise KeyboardInterrupt
        return "model", [self.output_dir]


def test_published_when_complete_with_paths_moved(tmp_path) -> None:
    ar = stage_saves(Compressor())
    assert stage_saves(ar) is ar  # patched once
    model, paths = ar.quantize_and_save(str(tmp_path / "out"), format="auto_round")
    final = tmp_path / "out" / "tiny-w4g128"
    assert model == "model" and paths == [str(final)] and ar.output_dir == str(final)
    assert (final / "config.json").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny-w4g128"]
    assert "quantize" not in vars(ar)  # the pre-tuning hook is gone again


def test_an_existing_export_dir_is_refused_before_tuning(tmp_path) -> None:
    taken = tmp_path / "out" / "tiny-w4g128"
    taken.mkdir(parents=True)
    (taken / "model.safetensors").write_text("old")
    ar = stage_saves(Compressor())
    with pytest.raises(OutputDirError, match="pass overwrite=True"):
        ar.quantize_and_save(str(tmp_path / "out"))
    assert not ar.tuned and [p.name for p in taken.iterdir()] == ["model.safetensors"]
    ar.quantize_and_save(str(tmp_path / "out"), overwrite=True)
    assert [p.name for p in taken.iterdir()] == ["config.json"]


def test_an_interrupted_save_leaves_nothing(tmp_path) -> None:
    ar = stage_saves(Compressor(fail=True))
    with pytest.raises(KeyboardInterrupt):
        ar.quantize_and_save(str(tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []  # no output, no staging directory


def test_resume_dir_saves_unstaged(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AR_RESUME_DIR", str(tmp_path / "out"))
    ar = stage_saves(Compressor(fail=True))
    with pytest.raises(KeyboardInterrupt):
        ar.quantize_and_save(str(tmp_path / "out"))
    assert (tmp_path / "out" / "tiny-w4g128" / "config.json").exists()
