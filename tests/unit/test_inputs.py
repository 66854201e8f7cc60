"""vsraq_modifier/inputs.py: what counts as a local path, the safetensors header
check (the same verdict as safetensors itself, without mapping the file), the
output-place and device checks, token ids of the vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vsraq_modifier import data
from vsraq_modifier.guards import CalibrationDataError
from vsraq_modifier.inputs import (
    DeviceError,
    InputError,
    ModelDirError,
    OutputPlaceError,
    _header,
    check_dataset_token_ids,
    check_device,
    check_model_dir,
    check_output_place,
    looks_local,
)
from vsraq_modifier.output import OutputDirError


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ("Qwen/Qwen3-30B-A3B", False),  # a hub id: org/name
        ("gpt2", False),
        ("./model", True),
        ("../model", True),
        ("~/model", True),
        ("/abs/model", True),
        ("runs/out/model", True),  # two separators: no hub id has them
        ("C:\\models\\m", True),
    ],
)
def test_local_looking_paths(path, local):
    assert looks_local(path) is local


def test_existing_relative_name_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2").mkdir()
    assert looks_local("gpt2")
    with pytest.raises(ModelDirError, match="no config.json"):
        check_model_dir("gpt2")


def test_hub_ids_pass_through_and_the_shipped_model_passes():
    assert check_model_dir("Qwen/Qwen3-30B-A3B") is None
    assert check_model_dir(data.shipped_model_dir(), tokenizer=True) == (
        data.shipped_model_dir()
    )
    with pytest.raises(ModelDirError, match="is not a directory"):
        check_model_dir("gpt2-nowhere", hub=False)  # the report: always local


def _damaged(tmp_path: Path) -> dict[str, bytes]:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(16, 16), "b": torch.ones(3)}, str(path))
    full = path.read_bytes()
    return {
        "ok": full,
        "half": full[: len(full) // 2],
        "one-byte-short": full[:-1],
        "one-byte-long": full + b"\0",
        "random": os.urandom(4096),
        "three-bytes": b"abc",
        "empty": b"",
        "header-not-json": (8).to_bytes(8, "little") + b"notjson!",
    }


def test_header_check_agrees_with_safetensors(tmp_path):
    path = tmp_path / "m.safetensors"
    for name, content in _damaged(tmp_path).items():
        path.write_bytes(content)
        try:
            with safe_open(str(path), "pt"):
                theirs = True
        except Exception:  # noqa: BLE001 - any refusal by safetensors
            theirs = False
        tensors, problem = _header(path)
        assert (problem is None) is theirs, (name, problem)
        if theirs:
            assert {k: v["shape"] for k, v in tensors.items()} == {
                "a": [16, 16],
                "b": [3],
            }


def test_output_place(tmp_path):
    assert check_output_place(tmp_path / "new" / "deeper") == tmp_path / "new/deeper"
    assert not (tmp_path / "new").exists()  # nothing created
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPlaceError, match="is a file"):
        check_output_place(tmp_path / "f")
    with pytest.raises(OutputPlaceError, match="no directory can be made there"):
        check_output_place(tmp_path / "f" / "sub")
    with pytest.raises(OutputPlaceError, match="not writable"):
        check_output_place("/sys/vsraq-test")  # nobody can create files there
    # one class for the commands, and the output module's class for the API
    assert issubclass(OutputPlaceError, InputError)
    assert issubclass(OutputPlaceError, OutputDirError)


def test_devices():
    assert check_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="not a torch device"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="this machine has no cuda"):
            check_device("cuda:0")
    with pytest.raises(DeviceError):
        check_device(f"cuda:{torch.cuda.device_count() + 3}")


def test_token_ids_of_the_vocabulary():
    check_dataset_token_ids([torch.tensor([[0, 5, 9]])], 10)
    check_dataset_token_ids("NeelNanda/pile-10k", 10)  # a name: the host's to read
    with pytest.raises(CalibrationDataError, match="sample 1 holds token id 10, "):
        check_dataset_token_ids(
            [torch.tensor([[1]]), {"input_ids": torch.tensor([10])}], 10
        )
    with pytest.raises(InputError, match="token id -3"):
        check_dataset_token_ids([torch.tensor([[-3, 2]])], 10)
