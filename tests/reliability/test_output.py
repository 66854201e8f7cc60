"""Checkpoint directories are complete or absent (``vsraq_modifier/output.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsraq_modifier.output import (
    OutputDirError,
    check_output_dir,
    publish,
    staged_output,
)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name)


def _write_checkpoint(path: Path, tag: str) -> None:
    (path / "config.json").write_text(tag)
    (path / "model.safetensors").write_text(tag)


def test_complete_checkpoint_is_renamed_into_place(tmp_path):
    final = tmp_path / "runs" / "ckpt"
    with staged_output(final) as stage:
        assert stage.parent == final.parent and stage.name.startswith(".ckpt.partial-")
        assert not final.exists()  # nothing at the final name while writing
        _write_checkpoint(stage, "new")
    assert (final / "config.json").read_text() == "new"
    assert _leftovers(final.parent) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_nothing(tmp_path, error):
    final = tmp_path / "ckpt"
    with pytest.raises(error):
        with staged_output(final) as stage:
            (stage / "model-00001-of-00002.safetensors").write_text("half")
            raise error()
    assert not final.exists()
    assert _leftovers(tmp_path) == []


def test_existing_checkpoint_refused_before_any_work(tmp_path):
    final = tmp_path / "ckpt"
    final.mkdir()
    _write_checkpoint(final, "old")
    ran = []
    with pytest.raises(OutputDirError, match="exists and is not empty.*overwrite"):
        with staged_output(final):
            ran.append(True)
    assert ran == [] and (final / "config.json").read_text() == "old"
    # an empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_output(empty) as stage:
        _write_checkpoint(stage, "new")
    assert (empty / "config.json").read_text() == "new"


def test_overwrite_replaces_only_once_complete(tmp_path):
    final = tmp_path / "ckpt"
    final.mkdir()
    _write_checkpoint(final, "old")
    (final / "model-00002-of-00002.safetensors").write_text("old shard")
    with pytest.raises(KeyboardInterrupt):
        with staged_output(final, overwrite=True) as stage:
            _write_checkpoint(stage, "new")
            raise KeyboardInterrupt
    assert (final / "config.json").read_text() == "old"  # untouched
    with staged_output(final, overwrite=True) as stage:
        _write_checkpoint(stage, "new")
    assert sorted(p.name for p in final.iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert (final / "config.json").read_text() == "new"  # no old shard mixed in
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(tmp_path / "f" / "ckpt")


def _unwritable(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores modes:
    then sysfs, where nobody can)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").write_text("x")
    except PermissionError:
        return ro
    (ro / "probe").unlink()
    return Path("/sys")


def test_unwritable_place_is_refused_before_any_work(tmp_path):
    ro = _unwritable(tmp_path)
    try:
        with pytest.raises(OutputDirError, match="not writable"):
            with staged_output(ro / "ckpt"):
                pytest.fail("ran in an unwritable place")
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_destination_appearing_meanwhile_keeps_the_new_checkpoint(tmp_path):
    source, target = tmp_path / ".x.partial-1", tmp_path / "x"
    source.mkdir()
    _write_checkpoint(source, "new")
    target.mkdir()
    _write_checkpoint(target, "someone else's")
    with pytest.raises(OutputDirError, match=r"complete in .*x\.new-\w+/x") as err:
        publish(source, target)
    kept = Path(str(err.value).split("complete in ")[1].split(":")[0])
    assert (kept / "config.json").read_text() == "new"  # visible, not hidden
    assert not kept.parent.name.startswith(".")
    assert (target / "config.json").read_text() == "someone else's"
