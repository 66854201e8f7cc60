"""Calibration windows behind ``vsraq demo`` and the benchmark, the validation
split, and the checks of a calibration file before a host reads it (no host
framework runs here)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.checkpoints import make_tokenizer
from vsraq_modifier.calibration import (
    CALIBRATION_SHARE,
    calibration_samples,
    check_calibration_file,
    check_calibration_settings,
    split_tokens,
)
from vsraq_modifier.inputs import CalibrationFileError, SettingError


def test_windows_follow_the_seed_and_do_not_overlap() -> None:
    ids = torch.arange(1000)
    a = calibration_samples(ids, nsamples=8, seqlen=50, seed=1)
    b = calibration_samples(ids, nsamples=8, seqlen=50, seed=1)
    c = calibration_samples(ids, nsamples=8, seqlen=50, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, c))
    starts = sorted(int(w[0, 0]) for w in a)
    assert all(w.shape == (1, 50) for w in a)
    assert all(s % 50 == 0 for s in starts) and len(set(starts)) == 8


def test_validation_split_is_disjoint_from_calibration() -> None:
    ids = torch.arange(1001)
    cal, val = split_tokens(ids, "calibration"), split_tokens(ids, "validation")
    assert cal.numel() + val.numel() == 1001
    assert int(cal.max()) < int(val.min())
    with pytest.raises(ValueError, match="nsamples"):
        calibration_samples(cal, nsamples=100, seqlen=10, seed=0)


def test_split_is_by_share_and_names_a_bad_part() -> None:
    ids = torch.arange(100)
    assert split_tokens(ids, "calibration").numel() == int(100 * CALIBRATION_SHARE)
    with pytest.raises(ValueError, match="'calibration' or 'validation'"):
        split_tokens(ids, "test")  # type: ignore[arg-type]


def test_settings_name_the_option_and_a_fix() -> None:
    check_calibration_settings(2, 1)
    check_calibration_settings(None, None)
    with pytest.raises(SettingError, match="--seqlen 1: .*--seqlen 2048"):
        check_calibration_settings(1, 4)
    with pytest.raises(SettingError, match="--nsamples 0: .*--nsamples 128"):
        check_calibration_settings(8, 0)


def test_json_and_jsonl_records_are_read_as_the_host_reads_them(tmp_path) -> None:
    listed = tmp_path / "c.json"
    listed.write_text(json.dumps(["a b ", {"text": "c d"}, {"only": "e"}]))
    assert check_calibration_file(listed) == ["a b", "c d", "e"]
    lines = tmp_path / "c.jsonl"
    lines.write_text('"x y"\n{"text": "z"}\n')  # final newline allowed
    assert check_calibration_file(lines) == ["x y", "z"]
    plain = tmp_path / "c.txt"
    plain.write_text("one text\n")
    assert check_calibration_file(plain, plain_text=True) == ["one text\n"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.txt", "words", "reads only .json"),
        ("c.json", "[1,", "invalid JSON at line 1"),
        ("c.json", '{"a": 1}', "record 1 \\(of 1\\) is 1, not a text"),
        ("c.json", "3", "holds a JSON int, not a list"),
        ("c.json", '["", " "]', "holds no text"),
        ("c.jsonl", '"a"\n\n"b"\n', "line 2 is blank"),
        ("c.jsonl", '"a"\nnope\n', "line 2 is not JSON"),
    ],
)
def test_bad_files_name_the_file_and_the_fix(tmp_path, name, content, message) -> None:
    file = tmp_path / name
    file.write_text(content)
    with pytest.raises(CalibrationFileError, match=message) as info:
        check_calibration_file(file)
    assert str(file) in str(info.value) and "\n" not in str(info.value)


def test_texts_shorter_than_seqlen_are_refused(tmp_path) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps(["w1 w2 w3", "w4 w5"]))
    tok = make_tokenizer()
    assert check_calibration_file(file, seqlen=3, tokenizer=tok)
    with pytest.raises(CalibrationFileError, match="longest: 3.*lower --seqlen to 3"):
        check_calibration_file(file, seqlen=4, tokenizer=tok)
