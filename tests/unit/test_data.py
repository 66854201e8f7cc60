"""The shipped-data paths: one place, and a clear error naming the option to pass
when a file is not shipped in this installation."""

from __future__ import annotations

import pytest

from vsraq_modifier import data


@pytest.mark.parametrize(
    ("function", "relative", "option"),
    [
        (data.shipped_model_dir, "model/config.json", "--reference"),
        (lambda: data.shipped_model_dir("deepseek_v3"), "model_deepseek_v3/config.json", "--reference"),
        (data.heldout_text_path, "heldout.txt", "--text"),
        (data.calibration_text_path, "calibration.txt", "--text"),
    ],
)
def test_paths_or_clear_error(function, relative: str, option: str) -> None:
    if (data.DATA_DIR / relative).is_file():
        assert str(function()).startswith(str(data.DATA_DIR))
    else:
        with pytest.raises(FileNotFoundError, match=option):
            function()


def test_missing_file_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped model.*--reference"):
        data.shipped_model_dir()
    (tmp_path / "heldout.txt").write_text("x")
    assert data.heldout_text_path() == tmp_path / "heldout.txt"
