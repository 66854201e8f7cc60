"""Loading checkpoints for the routing report: complete loads pass, partial ones are
refused naming the tensors (the conversion-table seam: tests/unit/
test_transformers_seams.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.checkpoints import drop_tensors, make_text, tiny_checkpoint
from vsraq_modifier.metrics.loading import (
    IncompleteCheckpointError,
    checkpoint_quant_method,
    load_model,
    load_token_ids,
)


def test_complete_checkpoint_loads(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    loaded = load_model(tmp_path, dtype="float32")
    assert loaded.dtype == "float32" and loaded.quant_method is None
    assert not loaded.model.training
    assert load_model(tmp_path, dtype="bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize(
    ("dropped", "named"),
    [
        # a whole layer's experts gone: missing, left random
        ("layers.1.mlp.experts.", "missing from the checkpoint"),
        # one expert gone: the fused tensor has the wrong shape
        ("layers.2.mlp.experts.3.", "wrong shape"),
    ],
)
def test_missing_expert_weights_are_refused(
    tmp_path: Path, dropped: str, named: str
) -> None:
    tiny_checkpoint(tmp_path)
    assert drop_tensors(tmp_path, dropped)
    layer = dropped.split(".")[1]
    with pytest.raises(IncompleteCheckpointError) as err:
        load_model(tmp_path)
    msg = str(err.value)
    assert named in msg
    assert f"model.layers.{layer}.mlp.experts.gate_up_proj" in msg
    assert f"model.layers.{layer}.mlp.experts.down_proj" in msg


def test_quant_method_and_token_ids(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    assert checkpoint_quant_method(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint_quant_method(tmp_path / "nowhere")
    text = tmp_path / "t.txt"
    text.write_text(make_text(300))
    ids = load_token_ids(text, tmp_path, max_tokens=100)
    assert ids.shape == (100,) and ids.dtype == torch.long
    assert int(ids.min()) >= 2  # every word known: no [UNK], no special tokens
