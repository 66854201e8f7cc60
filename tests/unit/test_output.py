"""The staging pieces on their own: the staging directory's life and SIGTERM
handler, publishing over an empty, an existing or a fresh destination, and the
output check's hints (the interrupted and refused runs: tests/reliability/
test_output.py)."""

from __future__ import annotations

import signal

import pytest

from vsraq_modifier.output import (
    OutputDirError,
    check_output_dir,
    publish,
    staged_output,
    staging,
)


def test_staging_is_hidden_next_to_the_target_and_always_removed(tmp_path) -> None:
    target = tmp_path / "deep" / "ckpt"
    before = signal.getsignal(signal.SIGTERM)
    with staging(target) as stage:
        assert stage.parent == target.parent and stage.name.startswith(".ckpt.partial-")
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(SystemExit) as info:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert info.value.code == 128 + signal.SIGTERM
        (stage / "f").write_text("x")
    assert not stage.exists() and not target.exists()
    assert signal.getsignal(signal.SIGTERM) is before


def test_publish_replaces_an_empty_directory_or_an_old_one_on_request(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    new = tmp_path / "new"
    new.mkdir()
    (new / "a").write_text("1")
    assert publish(new, target) == target and (target / "a").read_text() == "1"
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "b").write_text("2")
    publish(newer, target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # old one removed


def test_publish_keeps_the_new_checkpoint_beside_a_foreign_one(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "theirs").write_text("x")
    new = tmp_path / "new"
    new.mkdir()
    with pytest.raises(OutputDirError, match="complete in .*out.new-.*/out") as info:
        publish(new, target)
    kept = str(info.value).split("complete in ")[1].split(":")[0]
    assert (target / "theirs").exists() and not new.exists()
    assert (tmp_path / kept.split(str(tmp_path) + "/")[1]).is_dir()


def test_check_names_the_entry_points_fix(tmp_path) -> None:
    out = tmp_path / "out"
    assert check_output_dir(out) == out and not out.exists()
    out.mkdir()
    for i in range(6):
        (out / f"f{i}").write_text("")
    with pytest.raises(OutputDirError, match=r"f0, f1, f2, f3, \.\.\. \(6 entries\)"):
        check_output_dir(out)
    with pytest.raises(OutputDirError, match="has no overwrite option"):
        check_output_dir(out, entry="cli")
    assert check_output_dir(out, overwrite=True) == out


def test_staged_output_publishes_only_on_success(tmp_path) -> None:
    with staged_output(tmp_path / "ok") as stage:
        (stage / "config.json").write_text("{}")
    assert (tmp_path / "ok" / "config.json").exists()
    with pytest.raises(KeyboardInterrupt), staged_output(tmp_path / "no") as stage:
        (stage / "config.json").write_text("{}")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
