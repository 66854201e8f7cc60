"""The transformers seams (vsraq_modifier/transformers_seams.py): each test checks
that transformers still offers what one seam uses, by attribute or behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.checkpoints import tiny_checkpoint
from vsraq_modifier.metrics.loading import IncompleteCheckpointError, load_model
from vsraq_modifier.testing import tiny_config
from vsraq_modifier.transformers_seams import (
    attention_implementation,
    conversion_mapping_restored,
)


@pytest.mark.parametrize("kind", ["eager", "sdpa"])
def test_attention_implementation_is_what_the_model_runs(kind: str) -> None:
    """The private attribute the sequential pipeline patches is the one the
    attention layers read (public ``attn_implementation`` is the request)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("qwen3_moe")
    config._attn_implementation = kind
    model = AutoModelForCausalLM.from_config(config)
    assert attention_implementation(model.config) == kind
    assert attention_implementation(model.model.layers[0].self_attn.config) == kind


def test_conversion_table_seam_names_exist() -> None:
    from transformers import conversion_mapping as cm

    assert callable(cm.get_checkpoint_conversion_mapping)
    assert callable(cm.register_checkpoint_conversion_mapping)
    cm.get_checkpoint_conversion_mapping("llama")
    assert isinstance(cm._checkpoint_conversion_mapping_cache, dict)


def test_conversion_table_is_restored(tmp_path: Path) -> None:
    """What auto_round's loader does globally (drop the MoE merge converters of the
    model type) is undone after the load."""
    from transformers import conversion_mapping as cm

    tiny_checkpoint(tmp_path)
    before = cm.get_checkpoint_conversion_mapping("qwen3_moe")
    assert before
    with conversion_mapping_restored():
        cm.register_checkpoint_conversion_mapping("qwen3_moe", [], overwrite=True)
        with pytest.raises(IncompleteCheckpointError):
            load_model(tmp_path)
    assert len(cm.get_checkpoint_conversion_mapping("qwen3_moe")) == len(before)
    load_model(tmp_path)
