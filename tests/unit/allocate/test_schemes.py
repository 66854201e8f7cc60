"""Candidate schemes: parsing, AutoScheme's bit count, tiling."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.allocate.schemes import (
    SchemeError,
    check_tiling,
    matrix_bits,
    parse_scheme,
    parse_schemes,
)


def test_presets_and_group_override():
    s = parse_scheme("W2A16G64")
    assert (s.bits, s.group_size, s.sym, s.label) == (2, 64, True, "W2A16G64")
    s = parse_scheme("w4a16@64")
    assert (s.bits, s.group_size, s.preset, s.label) == (4, 64, "W4A16", "w4a16@64")
    assert parse_scheme("W4A16").group_size == 128
    assert parse_scheme("W8A16@-1").group_size == -1


@pytest.mark.parametrize(
    "text, words",
    [
        ("W5A17", ["unknown AutoRound preset", "W5A17"]),
        ("NVFP4", ["integer weight-only", "NVFP4"]),
        ("W4A16@x", ["@x", "positive group size"]),
        ("W4A16@0", ["@0"]),
    ],
)
def test_bad_schemes_are_named(text, words):
    with pytest.raises(SchemeError) as e:
        parse_scheme(text)
    for w in words:
        assert w in str(e.value)


def test_scheme_lists():
    assert [s.label for s in parse_schemes("W2A16G64, W4A16@64")] == [
        "W2A16G64",
        "W4A16@64",
    ]
    with pytest.raises(SchemeError, match="at least two"):
        parse_schemes("W4A16")
    with pytest.raises(SchemeError, match="twice"):
        parse_schemes("W4A16,W4A16")
    with pytest.raises(SchemeError, match="same scheme"):
        parse_schemes("W2A16G64,W2A16@64")


@pytest.mark.parametrize(
    "label", ["W2A16G64", "W4A16@64", "W4A16", "W3A16@32", "W8A16@-1"]
)
@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (48, 200), (1, 1024)])
def test_bits_equal_autoscheme_count(label, shape):
    """The count is AutoScheme's own (auto_scheme.utils.compute_layer_bits)."""
    from auto_round.auto_scheme.utils import compute_layer_bits

    s = parse_scheme(label)
    out_f, in_f = shape
    layer = torch.nn.Linear(in_f, out_f, bias=False)
    layer.bits, layer.group_size, layer.sym, layer.data_type = (
        s.bits,
        s.group_size,
        s.sym,
        s.data_type,
    )
    expected, _ = compute_layer_bits(layer)
    assert matrix_bits(s, in_f, out_f) == expected
    assert matrix_bits(s, in_f, out_f) > s.bits * in_f * out_f  # overhead counted


def test_tiling_refuses_groups_wider_than_a_width():
    check_tiling(parse_scheme("W4A16@64"), {"experts down_proj": 64, "attention": 256})
    with pytest.raises(SchemeError) as e:
        check_tiling(parse_scheme("W4A16"), {"experts down_proj": 64, "attention": 256})
    msg = str(e.value)
    assert "groups of 128" in msg and "64 inputs" in msg and "W4A16@64" in msg
    assert "\n" not in msg
