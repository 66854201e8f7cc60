"""Helpers for the routing-report tests: a tiny word-level tokenizer and text,
tiny checkpoints on disk, and a checkpoint with tensors removed."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vsraq_modifier.testing import tiny_model

#: 126 words + [UNK] + [EOS] = 128 ids, the tiny models' vocabulary
WORDS = [f"w{i}" for i in range(126)]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace-split word-level tokenizer over :data:`WORDS`."""
    vocab = {"[UNK]": 0, "[EOS]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]"
    )


def make_text(n_words: int, seed: int = 0) -> str:
    r = random.Random(seed)
    return " ".join(r.choice(WORDS) for _ in range(n_words))


def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """save_pretrained the model and the tiny tokenizer into ``path``."""
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def tiny_checkpoint(path: Path, seed: int = 0, **overrides) -> Path:
    """A tiny random Qwen3-MoE checkpoint (+ tokenizer) in ``path``."""
    return save_checkpoint(tiny_model("qwen3_moe", seed=seed, **overrides), path)


def drop_tensors(path: Path, substring: str) -> list[str]:
    """Remove every tensor whose name contains ``substring`` from the checkpoint's
    model.safetensors; returns the removed names."""
    file = path / "model.safetensors"
    tensors = load_file(file)
    dropped = sorted(k for k in tensors if substring in k)
    save_file(
        {k: v for k, v in tensors.items() if k not in dropped},
        file,
        metadata={"format": "pt"},
    )
    return dropped
