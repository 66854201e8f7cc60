"""The early stops of a tuning run: calibration data with nothing to tune on, and
NaN/inf in a loss, in router logits or in a block, each named by layer and
parameter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vsraq_modifier.guards import (
    CalibrationDataError,
    NonFiniteTuningError,
    check_calibration_samples,
    check_finite_block,
    check_finite_loss,
    check_finite_router_logits,
    check_valid_tokens,
    non_finite_parameters,
)


def _block(bad: str | None = None) -> nn.Module:
    block = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    if bad:
        with torch.no_grad():
            block.get_parameter(bad).view(-1)[0] = math.nan
    return block


def test_calibration_samples() -> None:
    ids = torch.zeros(1, 8, dtype=torch.long)
    check_calibration_samples([ids, {"input_ids": ids}, (ids,)], seqlen=8)
    check_calibration_samples("NeelNanda/pile-10k", seqlen=8)  # the host's to read
    with pytest.raises(CalibrationDataError, match="dataset is empty"):
        check_calibration_samples([], seqlen=8)
    with pytest.raises(CalibrationDataError, match="seqlen=16 \\(longest: 8 tokens"):
        check_calibration_samples([ids, {"input_ids": ids}], seqlen=16)


def test_valid_tokens() -> None:
    check_valid_tokens(None, 0)
    check_valid_tokens([torch.tensor([0, 1])], 0)
    with pytest.raises(
        CalibrationDataError, match="vsraq layer 3: .* of the 2 samples"
    ):
        check_valid_tokens([torch.zeros(4), torch.zeros(2)], 3)


def test_non_finite_parameters_are_named_renamed_and_capped() -> None:
    assert non_finite_parameters(_block()) == []
    assert non_finite_parameters(_block("1.bias")) == ["1.bias"]
    block = nn.ModuleList(nn.Linear(1, 1) for _ in range(4))
    for p in block.parameters():
        p.data.fill_(math.inf)
    shown = non_finite_parameters(block, shown=3, rename=lambda n: "m." + n)
    assert shown == ["m.0.weight", "m.0.bias", "m.1.weight", "... 5 more"]


def test_loss_names_the_layer_and_the_cause() -> None:
    check_finite_loss(torch.tensor(1.0), _block(), 2)
    with pytest.raises(NonFiniteTuningError, match="NaN/inf in parameters 0.weight"):
        check_finite_loss(torch.tensor(math.nan), _block("0.weight"), 2)
    with pytest.raises(NonFiniteTuningError, match="layer 2 are finite: its inputs"):
        check_finite_loss(torch.tensor(math.inf), _block(), 2)
    with pytest.raises(
        NonFiniteTuningError, match="routing terms overflowed.*value_weight"
    ):
        check_finite_loss(torch.tensor(math.inf), _block(), 2, what="total loss")


def test_router_logits_point_at_the_lookahead_layer() -> None:
    ok = torch.zeros(3, 4)
    check_finite_router_logits({"r": (ok, ok)}, _block(), 0)
    bad = ok.clone()
    bad[0, :2] = math.nan
    with pytest.raises(
        NonFiniteTuningError, match="quantized block's logits hold 2 NaN"
    ):
        check_finite_router_logits({"r": (bad, ok)}, _block(), 0)
    with pytest.raises(NonFiniteTuningError, match="reference's.*decoder layer 1"):
        check_finite_router_logits(
            {"next": (ok, bad)}, _block(), 0, others={1: _block("1.weight")}
        )


def test_block_after_tuning() -> None:
    check_finite_block(_block(), 0)
    with pytest.raises(NonFiniteTuningError, match="parameters layer.0.bias hold"):
        check_finite_block(_block("0.bias"), 5, rename=lambda n: "layer." + n)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_all_finite_sees_one_bad_entry_and_an_overflowing_sum(bad) -> None:
    from vsraq_modifier.guards import all_finite

    t = torch.ones(64, 32, dtype=torch.float64)
    if bad is None:  # finite entries whose sum overflows: the exact check decides
        t = torch.full((4,), 3e38, dtype=torch.float32)
        assert not torch.isfinite(t.sum()) and all_finite(t)
        return
    assert all_finite(t)
    t[17, 5] = bad
    assert not all_finite(t)
    mixed = torch.tensor([float("inf"), float("-inf")])  # sums to NaN
    assert not all_finite(mixed)
