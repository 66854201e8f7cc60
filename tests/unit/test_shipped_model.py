"""The shipped benchmark MoE: loads offline, fits the size budget, is stored in
bf16, and really routes (peaked, balanced routers) on held-out text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.helpers.shipped import load_shipped

DATA = Path(__file__).resolve().parents[2] / "vsraq_modifier" / "data"
MODEL = DATA / "model"
MAX_BYTES = 40 * 1024 * 1024


def test_shipped_data_fits_budget() -> None:
    files = [p for p in DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    total = sum(p.stat().st_size for p in files)
    assert total <= MAX_BYTES, f"vsraq_modifier/data holds {total / 2**20:.1f} MiB > 40"
    for name in (
        "heldout.txt",
        "calibration.txt",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/config.json",
    ):
        assert (DATA / name).is_file(), name


def test_weights_are_bf16() -> None:
    with safe_open(MODEL / "model.safetensors", framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"BF16"}


@pytest.fixture(scope="module")
def shipped():
    return load_shipped(MODEL)


def test_config_is_a_real_moe(shipped) -> None:
    _, model = shipped
    cfg = model.config
    assert cfg.model_type == "qwen3_moe"
    assert cfg.num_experts >= 16 and 2 <= cfg.num_experts_per_tok <= 4
    # as Qwen3 ships; forcing a host's bare-logit gate (oracle) needs it
    assert cfg.norm_topk_prob
    assert not cfg.mlp_only_layers and cfg.num_hidden_layers >= 4


def test_tokenizer_round_trips(shipped) -> None:
    tok, _ = shipped
    text = "In the beginning was the Word.\n>>> print(sorted(d.items()))"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2.5  # a trained BPE, not bytes


def test_routes_on_heldout_text(shipped) -> None:
    """Peaked routers (mean top-1 probability 8x uniform), every layer
    using most of its experts without one taking over, and a perplexity far below
    a random model's, on 4 x 512 held-out tokens spread over the whole text (the
    sources differ, and so do the experts they use)."""
    tok, model = shipped
    text = DATA.joinpath("heldout.txt").read_text("utf-8")
    ids = torch.tensor(tok(text, verbose=False)["input_ids"])
    starts = torch.linspace(0, ids.numel() - 512, 4).long().tolist()
    x = torch.stack([ids[s : s + 512] for s in starts])
    with torch.no_grad():
        out = model(input_ids=x, output_router_logits=True, use_cache=False)
    n_exp, k = model.config.num_experts, model.config.num_experts_per_tok
    assert len(out.router_logits) == model.config.num_hidden_layers
    for layer, logits in enumerate(out.router_logits):
        probs = logits.float().softmax(-1)
        top1 = probs.max(-1).values.mean().item()
        assert top1 > 8 / n_exp, f"layer {layer}: mean top-1 probability {top1:.3f}"
        load = torch.bincount(probs.topk(k, -1).indices.reshape(-1), minlength=n_exp)
        share = load.float() / load.sum()
        used = int((load > 0).sum())
        assert used >= n_exp * 3 // 4, f"layer {layer}: load {load.tolist()}"
        assert share.max() < 0.2, f"layer {layer}: load {load.tolist()}"
    vocab = model.config.vocab_size
    nll = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, vocab), x[:, 1:].reshape(-1)
    )
    log = json.loads((MODEL / "train_log.json").read_text())
    assert nll.exp().item() < 2 * log["heldout_perplexity_fp32"]
