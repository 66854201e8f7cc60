"""Helpers for the llm-compressor integration tests: tiny checkpoints on disk
(``oneshot`` reads the config back from ``name_or_path``), a word-level tokenizer
(``oneshot`` insists on a processor), in-memory calibration token ids, and small
schemes that divide the tiny models' 16-wide dimensions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = [
    "SCHEMES",
    "calibration",
    "load",
    "modifier_args",
    "run_oneshot",
    "tiny_checkpoint",
    "tiny_tokenizer",
    "token_ids",
]

SEQ = 32


def _int_scheme(bits: int) -> dict[str, Any]:
    weights = dict(num_bits=bits, type="int", symmetric=True, strategy="group")
    return {"weights": {**weights, "group_size": 16}}


#: scheme name -> VSRAQModifier keyword arguments for the tiny models. The presets
#: W4A16/W3A16 use groups of 128, wider than the tiny models' layers; the same
#: schemes with groups of 16 stand in for them. NVFP4 (groups of 16) and MXFP4
#: (groups of 32) are used as they are.
SCHEMES: dict[str, dict[str, Any]] = {
    "W4A16": {"config_groups": {"group_0": {"targets": ["Linear"], **_int_scheme(4)}}},
    "W3A16": {"config_groups": {"group_0": {"targets": ["Linear"], **_int_scheme(3)}}},
    "NVFP4": {"targets": ["Linear"], "scheme": "NVFP4"},
    "MXFP4": {"targets": ["Linear"], "scheme": "MXFP4"},
}

IGNORE = ["lm_head", "re:.*mlp.gate$", "re:.*mlp.router$", "re:.*shared_expert_gate$"]


def modifier_args(scheme: str = "W4A16", **overrides: Any) -> dict[str, Any]:
    """Small, fast VSRAQModifier arguments (2 iterations, eager)."""
    args = dict(SCHEMES[scheme], ignore=IGNORE, iters=2, enable_torch_compile=False)
    return {**args, **overrides}


def tiny_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="t0", pad_token="t0", eos_token="t1"
    )


def tiny_checkpoint(family: str, root: Path, seed: int = 0, **overrides: Any) -> Path:
    """A tiny random model of ``family`` and its tokenizer saved under ``root``."""
    from vsraq_modifier.testing import tiny_model

    path = root / family
    if not (path / "config.json").exists():
        model = tiny_model(family, seed=seed, **overrides)
        model.save_pretrained(path)
        tiny_tokenizer(model.config.vocab_size).save_pretrained(path)
    return path


def load(path: Path, dtype: torch.dtype = torch.float32) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def token_ids(
    vocab_size: int, n: int = 2, seq: int = SEQ, seed: int = 0
) -> torch.Tensor:
    """Random ids in [2, vocab) (0 and 1 are the tokenizer's pad/eos)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab_size, (n, seq), generator=g)


def calibration(ids: torch.Tensor) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()}
    )


def run_oneshot(model: Any, recipe: Any, ids: torch.Tensor, **kwargs: Any) -> Any:
    """``oneshot`` on in-memory calibration ids (one sample per batch)."""
    from llmcompressor import oneshot

    return oneshot(
        model=model,
        processor=tiny_tokenizer(model.config.vocab_size),
        dataset=calibration(ids),
        recipe=recipe,
        num_calibration_samples=ids.shape[0],
        max_seq_length=ids.shape[1],
        shuffle_calibration_samples=False,
        **kwargs,
    )
