"""``auto-round --loss vsraq`` and ``autoround(...)`` with bad model directories,
calibration files, settings and too little disk space: one ``auto-round: error:``
line naming the input, exit status 2, before AutoRound loads anything, and no
output directory left (vsraq_modifier/inputs.py, calibration.py, disk.py).

The command runs in-process (``vsraq_modifier.integrations.autoround.cli.main``:
the same parser and ``tune`` as the ``auto-round`` script, whose hook path
``test_the_installed_command_refuses_a_missing_model`` runs once as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.autoround import calib_ids, save_model_dir, small_moe, tiny_tokenizer
from vsraq_modifier.guards import CalibrationDataError
from vsraq_modifier.inputs import InputError
from vsraq_modifier.integrations.autoround import autoround
from vsraq_modifier.integrations.autoround.cli import main

pytestmark = pytest.mark.usefixtures("host_env")

SMALL = ["--iters", "2", "--nsamples", "4", "--seqlen", "32", "--batch_size", "2"]
SMALL += ["--device_map", "cpu", "--disable_torch_compile", "--loss", "vsraq"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, Path]:
    """A loadable model directory and calibration json (never modified)."""
    return save_model_dir(tmp_path_factory.mktemp("good") / "model", small_moe())


def _run(tmp_path: Path, capsys, model, dataset, *extra: str) -> str:
    """Run the command; assert exit 2, nothing written, one error line; return it."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(
            ["--model", str(model), "--dataset", str(dataset)]
            + ["--output_dir", str(out), *SMALL, *extra]
        )
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert e.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("auto-round: error: "), err
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]
    return lines[0]


def _copy_model(good: tuple[Path, Path], to: Path) -> Path:
    to.mkdir()
    for f in good[0].iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


# --- model directories -------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "relative",
        "file",
        "no-weights",
        "truncated",
        "random",
        "bad-config",
        "no-model-type",
        "no-tokenizer",
    ],
)
def test_bad_model_directory_is_named_before_loading(
    tmp_path, capsys, good, monkeypatch, case
):
    model = tmp_path / "m"
    expected = str(model)
    if case == "missing":
        expected = "is not a directory (no such path; a local path, so no hub lookup)"
    elif case == "relative":  # ./m: a hub lookup before; refused, named absolute
        monkeypatch.chdir(tmp_path)
        model, expected = "./m", f"{tmp_path / 'm'} is not a directory"
    elif case == "file":
        model.write_text("x")
        expected = "is a file, not a checkpoint directory"
    else:
        _copy_model(good, model)
        weights = model / "model.safetensors"
        if case == "no-weights":
            weights.unlink()
            expected = "config.json but no weights"
        elif case == "truncated":
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 2])
            expected = "model.safetensors is not a readable safetensors file"
        elif case == "random":
            weights.write_bytes(os.urandom(4096))
            expected = "header too large"
        elif case == "bad-config":
            (model / "config.json").write_text('{"model_type": "qwen3_moe",')
            expected = "config.json: invalid JSON at line 1"
        elif case == "no-model-type":
            (model / "config.json").write_text("[1, 2]")
            expected = "no model_type"
        elif case == "no-tokenizer":
            for name in ("tokenizer.json", "tokenizer_config.json"):
                (model / name).unlink()
            expected = "no tokenizer files"
    line = _run(tmp_path, capsys, model, good[1])
    assert "--model" in line and expected in line, line


@pytest.mark.slow
def test_the_installed_command_refuses_a_missing_model(tmp_path, good):
    """The real ``auto-round`` script (through the import hook), from a fresh
    directory, with a relative path that used to become a hub lookup."""
    cmd = Path(sys.executable).parent / "auto-round"
    run = subprocess.run(
        [str(cmd), "--model", "./nowhere", "--dataset", str(good[1])]
        + ["--output_dir", "out", *SMALL],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if "error" in ln.lower()]
    assert errors == [
        f"auto-round: error: --model {tmp_path / 'nowhere'} is not a directory "
        "(no such path; a local path, so no hub lookup); pass a checkpoint "
        "directory or a hub id such as org/name"
    ]
    assert not (tmp_path / "out").exists()


# --- calibration files -------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.json", b"", "is empty"),
        ("spaces.jsonl", b"  \n", "is empty"),
        ("bad.jsonl", b'"one"\n{"text": "two"\n"three"\n', "line 2 is not JSON"),
        ("blank.jsonl", b'"one"\n\n"two"\n', "line 2 is blank"),
        ("latin1.json", '["caf\u00e9"]'.encode("latin-1"), "not UTF-8 (byte 5"),
        ("binary.json", b"\x00\x01\x02", "binary content (a NUL byte at byte 0)"),
        ("calib.txt", b"some text", "reads only .json"),
        ("numbers.json", b'["text", 7]', "record 2 (of 2) is 7, not a text"),
        ("object.json", b'"just a string"', "holds a JSON str, not a list"),
        ("short.json", json.dumps(["ab", "cd"]).encode(), "shorter than --seqlen 32"),
        ("missing.json", None, "is not a file (no such file)"),
    ],
)
def test_bad_calibration_file_is_named(tmp_path, capsys, good, name, content, expected):
    dataset = tmp_path / name
    if content is not None:
        dataset.write_bytes(content)
    line = _run(tmp_path, capsys, good[0], dataset)
    assert f"--dataset {dataset}" in line and expected in line, line


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--seqlen", "1", "--seqlen 1: a calibration sample needs at least 2 tokens"),
        ("--seqlen", "0", "--seqlen 0: a calibration sample needs at least 2 tokens"),
        ("--nsamples", "0", "--nsamples 0: at least 1 calibration sample"),
    ],
)
def test_unusable_sample_settings(tmp_path, capsys, good, flag, value, expected):
    line = _run(tmp_path, capsys, good[0], good[1], flag, value)  # last one wins
    assert expected in line, line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--seed", "-1"], "--seed -1: use a seed in 0..4294967295"),
        (["--batch_size", "0"], "--batch_size 0: use 1 or more samples per step"),
        (["--lr", "-1"], "--lr -1.0: the learning rate must be a finite number > 0"),
        (["--lr", "nan"], "--lr nan: the learning rate must be a finite number > 0"),
        (["--scheme", "W9A16"], "--scheme W9A16: not an AutoRound scheme"),
        (["--format", "onnx"], "--format onnx: not an AutoRound export format"),
        (["--output_dir", ""], "--output_dir is an empty path"),  # was the cwd
        (["--model", ""], "--model is an empty path"),
        (["--dataset", ""], "--dataset is an empty path"),
        (["--dataset", "{data}:num=abc"], "num=abc is not a number of samples"),
    ],
)
def test_settings_the_host_refuses_with_a_traceback(
    tmp_path, capsys, good, monkeypatch, args, expected
):
    monkeypatch.chdir(tmp_path)
    args = [a.format(data=good[1]) for a in args]
    line = _run(tmp_path, capsys, good[0], good[1], *args)  # the last flag wins
    assert expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing in the cwd


def test_memory_limit_that_is_not_a_number(tmp_path, capsys, good, monkeypatch):
    for value in ("lots", "-1", "nan"):
        monkeypatch.setenv("VSRAQ_MEMORY_LIMIT_GB", value)
        line = _run(tmp_path, capsys, good[0], good[1])
        assert f"VSRAQ_MEMORY_LIMIT_GB='{value}': expected a number of GB" in line


# --- disk space --------------------------------------------------------------------
def _huge_model(tmp_path: Path, good: tuple[Path, Path]) -> Path:
    """A model directory whose safetensors header declares more weights than the
    disk holds (a sparse file: takes no space). Header and size are consistent."""
    model = _copy_model(good, tmp_path / "huge")
    free = __import__("shutil").disk_usage(tmp_path).free
    rows = free // (1024 * 2) * 4  # W4: 0.5 byte per value > free space
    header = save_file_header({"model.layers.0.mlp.w.weight": ("BF16", [rows, 1024])})
    path = model / "model.safetensors"
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + rows * 1024 * 2)
    return model


def save_file_header(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    meta, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = 2 * int(torch.tensor(shape).prod())
        meta[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(meta).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def test_too_little_disk_space_is_refused_before_tuning(tmp_path, capsys, good):
    model = _huge_model(tmp_path, good)
    line = _run(tmp_path, capsys, model, good[1])
    assert f"output {tmp_path / 'out'}: the checkpoint needs at least" in line
    assert "GB free; free space or choose another output directory" in line


# --- the Python API ----------------------------------------------------------------
def test_api_token_id_beyond_the_vocabulary_is_named():
    data = calib_ids(4)
    data[2] = data[2].clone()
    data[2][0, 5] = 128  # the tiny model has 128 ids
    with pytest.raises(
        CalibrationDataError,
        match=r"sample 2 holds token id 128, "
        r"outside the model's vocabulary of 128 ids \(0\.\.127\)",
    ):
        autoround(
            small_moe(),
            tiny_tokenizer(),
            dataset=data,
            seqlen=32,
            nsamples=4,
            iters=2,
            device_map="cpu",
        )


def test_api_negative_token_id_and_missing_model_path(tmp_path):
    data = [torch.full((1, 32), -1)]
    with pytest.raises(InputError, match="token id -1"):
        autoround(small_moe(), tiny_tokenizer(), dataset=data, seqlen=32, nsamples=1)
    with pytest.raises(InputError, match="model .* is not a directory"):
        autoround(str(tmp_path / "nowhere"), dataset=calib_ids(1), seqlen=32)
    with pytest.raises(InputError, match="--seqlen 0"):
        autoround(small_moe(), tiny_tokenizer(), dataset=calib_ids(1), seqlen=0)
