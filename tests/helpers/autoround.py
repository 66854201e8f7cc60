"""Shared setup of the AutoRound integration tests: tiny MoE, tiny tokenizer,
calibration token ids, and one call that runs AutoRound with a given loss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vsraq_modifier.testing import tiny_model

VOCAB = 128
#: small enough for seconds per run (each iteration draws batch_size x
#: gradient_accumulate_steps of the samples)
RUN = dict(nsamples=4, seqlen=32, batch_size=2, device_map="cpu", scheme="W4A16")
#: dims that every scheme's group size divides (g128 needs in_features >= 128)
EXPORT_DIMS = dict(
    hidden_size=128, head_dim=32, moe_intermediate_size=128, intermediate_size=128
)


def tiny_tokenizer() -> Any:
    """A character-level tokenizer with ``VOCAB`` ids (built, not downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 32 + VOCAB - 3)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def calib_ids(n: int = 4, seqlen: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """``n`` samples [1, seqlen] of random non-special token ids."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (1, seqlen), generator=g) for _ in range(n)]


def small_moe(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """Two Qwen3-MoE layers: block 0 has a downstream router, block 1 has none."""
    return tiny_model("qwen3_moe", seed=seed, **{"num_hidden_layers": 2, **overrides})


def quantize(
    loss: str | None, model: torch.nn.Module | None = None, **kwargs: Any
) -> Any:
    """Run AutoRound on ``model`` (plain AutoRound when ``loss`` is None) and
    return the compressor; its ``alg_composer.block_quantizer`` ran the blocks."""
    model = small_moe() if model is None else model
    args = {**RUN, "dataset": calib_ids(RUN["nsamples"]), "iters": 2, **kwargs}
    if loss is None:
        from auto_round import AutoRound

        ar = AutoRound(model, tiny_tokenizer(), enable_torch_compile=False, **args)
    else:
        from vsraq_modifier.integrations.autoround import autoround

        ar = autoround(model, tiny_tokenizer(), loss=loss, **args)
    ar.quantize()
    return ar


def save_model_dir(
    path: Path, model: torch.nn.Module, texts: int = 6
) -> tuple[Path, Path]:
    """A local model directory (weights, config, tokenizer) and a calibration
    json with ``texts`` strings of 80 characters: what ``auto-round --model DIR
    --dataset FILE`` reads."""
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    g = torch.Generator().manual_seed(1)
    alphabet = "abcdefghijklmnopqrstuvwxyz ,."
    rows = []
    for _ in range(texts):
        idx = torch.randint(0, len(alphabet), (80,), generator=g)
        rows.append("".join(alphabet[int(i)] for i in idx))
    data = path / "calib.json"
    data.write_text(json.dumps(rows))
    return path, data


def spy_objective(quantizer: Any, on_call: Any) -> None:
    """Replace ``quantizer.objective`` by a pass-through that first calls
    ``on_call(pairs, host_loss, loss)`` with the real objective's loss (the real
    objective still computes everything; reset/first/last are the real one's)."""
    real = quantizer.objective

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def __call__(self, pairs: Any, host_loss: Any = None, **kwargs: Any) -> Any:
            loss, terms = real(pairs, host_loss=host_loss, **kwargs)
            on_call(pairs, host_loss, loss)
            return loss, terms

    quantizer.objective = Spy()
