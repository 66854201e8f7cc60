"""The shipped models as the tests load them: offline, float32, eval mode."""

from __future__ import annotations

from pathlib import Path

import torch


def load_shipped(path: Path) -> tuple:
    """(tokenizer, model) of a shipped model folder, from local files only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=torch.float32
    ).eval()
    return tok, model
