"""The modifier's early checks on their own: empty or all-padding calibration
batches, and the memory estimate from the first decoder layer's captured calls."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.guards import CalibrationDataError
from vsraq_modifier.integrations.llmcompressor.calibration_checks import (
    check_calibration_data,
    check_first_layer,
)
from vsraq_modifier.memory import ENV_LIMIT, MemoryLimitError
from vsraq_modifier.testing import tiny_model


def _batch(attended: int) -> dict:
    mask = torch.zeros(1, 4, dtype=torch.long)
    mask[0, :attended] = 1
    return {"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": mask}


def test_calibration_batches() -> None:
    check_calibration_data([_batch(0), _batch(1)])
    check_calibration_data(iter([]))  # no len: the host's to read
    check_calibration_data([{"input_ids": torch.ones(1, 4)}])  # no masks: unchecked
    with pytest.raises(CalibrationDataError, match="empty \\(0 batches\\)"):
        check_calibration_data([])
    with pytest.raises(CalibrationDataError, match="of the 2 calibration batches"):
        check_calibration_data([_batch(0), _batch(0)])


def test_memory_is_estimated_from_the_first_layer_only(monkeypatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "off")
    model = tiny_model("qwen3_moe", num_hidden_layers=2)
    first, second = model.model.layers
    calls = [
        ((torch.zeros(2, 8, 64),), {}),
        ((), {"hidden_states": torch.zeros(1, 8, 64)}),
    ]
    estimate = check_first_layer(model, first, calls, vsraq=VSRAQConfig(), batch_size=1)
    assert estimate is not None
    assert (estimate.tokens, estimate.batch_tokens) == (24, 16)
    # own + look-ahead router, and layer 1's frozen attention output (hidden 64)
    assert estimate.reference_bytes == 24 * (8 + 8 + 64) * 2
    assert (
        check_first_layer(model, second, calls, vsraq=VSRAQConfig(), batch_size=1)
        is None
    )
    assert (
        check_first_layer(model, first, [], vsraq=VSRAQConfig(), batch_size=1) is None
    )
    monkeypatch.setenv(ENV_LIMIT, "0.0000001")
    with pytest.raises(MemoryLimitError, match="24 tokens"):
        check_first_layer(model, first, calls, vsraq=VSRAQConfig(), batch_size=1)
