"""Calibration windows and the export-format choice behind ``vsraq demo`` and the
benchmark (no host framework runs here)."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.calibration import calibration_samples, split_tokens
from vsraq_modifier.cli.runs import FALLBACK_EXPORT, METHODS, SCHEMES, export_format
from vsraq_modifier.testing import tiny_model


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


def test_export_format_falls_back_when_groups_do_not_tile() -> None:
    narrow = tiny_model("qwen3_moe")  # experts 32 wide: group 128 does not divide
    fmt, why = export_format(narrow, SCHEMES["W4A16"])
    assert fmt == FALLBACK_EXPORT and "down_proj" in why
    wide = tiny_model(
        "qwen3_moe", hidden_size=128, head_dim=32, moe_intermediate_size=128
    )
    assert export_format(wide, SCHEMES["W4A16"]) == ("llm_compressor", None)
    assert export_format(narrow, SCHEMES["NVFP4"]) == ("auto_round", None)


def test_methods_are_the_issue_matrix() -> None:
    assert list(METHODS) == [
        "rtn",
        "mse",
        "topk_mse",
        "router_kl",
        "vsraq",
        "vsraq_value",
        "vsraq_structure",
        "vsraq_nolookahead",
    ]
    assert METHODS["vsraq_value"].options["structure_weight"] == 0.0
    assert METHODS["mse"].options is None  # plain AutoRound, no plugin code
