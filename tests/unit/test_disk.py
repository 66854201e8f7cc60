"""vsraq_modifier/disk.py: scheme bits, the checkpoint-size lower bound (checked
against a real AutoRound export of the tiny model) and the free-space check."""

from __future__ import annotations

import shutil

import pytest

from vsraq_modifier.disk import check_free_space, estimate_checkpoint_bytes, scheme_bits
from vsraq_modifier.inputs import DiskSpaceError, InputError
from vsraq_modifier.output import OutputDirError


@pytest.mark.parametrize(
    ("scheme", "bits", "group"),
    [
        ("W4A16", 4, 128),
        ("w3a16", 3, 128),
        ("W2A16G64", 2, 64),
        ("NVFP4", 4, 16),
        ("MXFP4", 4, 32),
        ("FPW8A16", 8, 128),
        ("GGUF:Q4_K_M", 4, 128),
        ("BF16", 16, 0),
    ],
)
def test_scheme_bits(scheme, bits, group):
    assert scheme_bits(scheme) == (bits, group)


def test_explicit_bits_and_group_win():
    assert scheme_bits("W4A16", bits=2, group_size=32) == (2, 32)


def test_estimate_is_a_lower_bound_of_a_real_export(tmp_path):
    """The tiny model quantized by AutoRound (W4A16, llm_compressor export: widths
    of 128 so every weight is packed) is larger than the estimate, and not by much
    more than the files the estimate leaves out."""
    import torch
    from auto_round import AutoRound

    from tests.helpers.checkpoints import make_tokenizer
    from vsraq_modifier.testing import tiny_model

    dims = dict(
        hidden_size=128, head_dim=32, moe_intermediate_size=128, intermediate_size=128
    )
    model = tiny_model("qwen3_moe", num_hidden_layers=2, **dims)
    model.save_pretrained(tmp_path / "fp")
    ar = AutoRound(
        model, make_tokenizer(), scheme="W4A16", iters=0, disable_opt_rtn=True,
        seqlen=8,
        dataset=[torch.randint(0, 128, (1, 8))], nsamples=1, device_map="cpu",
        enable_torch_compile=False,
    )  # fmt: skip
    ar.quantize_and_save(str(tmp_path / "q"), format="llm_compressor")
    written = sum(f.stat().st_size for f in (tmp_path / "q").rglob("*.safetensors"))
    estimate = estimate_checkpoint_bytes(tmp_path / "fp", 4, 128)
    assert 0 < estimate <= written < 2 * estimate, (estimate, written)


def test_free_space(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    check_free_space(tmp_path / "new" / "out", 1)
    with pytest.raises(DiskSpaceError, match=r"needs at least .* GB free"):
        check_free_space(tmp_path / "new" / "out", free * 2)
    assert not (tmp_path / "new").exists()
    assert issubclass(DiskSpaceError, InputError) and issubclass(
        DiskSpaceError, OutputDirError
    )
