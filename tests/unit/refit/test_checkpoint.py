"""The checkpoint side of ``vsraq refit``: every tensor of every shard is found
with its byte offset (what lets the router tensors be rewritten in place)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vsraq_modifier.refit.checkpoint import RefitInputError, shards


def test_shards_locate_every_tensor(tmp_path) -> None:
    save_file({"a": torch.arange(4.0)}, str(tmp_path / "model-00001.safetensors"))
    save_file({"b": torch.ones(2, 3)}, str(tmp_path / "model-00002.safetensors"))
    found = shards(tmp_path)
    assert set(found) == {"a", "b"}
    path, start, entry = found["b"]
    assert path.name == "model-00002.safetensors" and entry["shape"] == [2, 3]
    begin, end = entry["data_offsets"]
    raw = path.read_bytes()[start + begin : start + end]
    assert torch.frombuffer(bytearray(raw), dtype=torch.float32).tolist() == [1.0] * 6
    with pytest.raises(RefitInputError, match="no .safetensors"):
        shards(tmp_path / "nothing")
