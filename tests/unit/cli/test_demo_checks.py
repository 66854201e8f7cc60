"""The demo's own checks: paths made absolute against the starting directory, an
output that is a file or not empty refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsraq_modifier.cli.demo_checks import DemoInputError, absolute, check_out
from vsraq_modifier.inputs import InputError


def test_paths_and_outputs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute("demo") == tmp_path / "demo" and absolute("demo").is_absolute()
    check_out(tmp_path / "new", overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_out(tmp_path / "file", overwrite=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "a").write_text("x")
    with pytest.raises((DemoInputError, InputError), match="not empty"):
        check_out(full, overwrite=False)
    check_out(full, overwrite=True)
    assert isinstance(absolute(Path("~")), Path)
