"""vsraq_modifier/checkpoint_dir.py: what counts as a local path, and the
safetensors header check (the same verdict as safetensors itself, without
mapping the file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vsraq_modifier import data
from vsraq_modifier.checkpoint_dir import _header, check_model_dir, looks_local
from vsraq_modifier.inputs import ModelDirError


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
