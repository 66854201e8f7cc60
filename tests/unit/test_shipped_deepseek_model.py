"""The second shipped benchmark MoE (DeepSeek-V3): the architecture the issue asks
for (group-limited sigmoid routing with a selection bias, a shared expert, a dense
first layer), widths that vLLM's Marlin MoE serves at int4 groups of 64, bf16
weights with the selection bias in float32, reached by name, and it routes (its
experts balanced by the selection bias) on held-out text."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tests.helpers.shipped import load_shipped
from vsraq_modifier import data
from vsraq_modifier.routers.registry import find_routers

MODEL = data.DATA_DIR / "model_deepseek_v3"


def test_reached_by_name_and_default_unchanged() -> None:
    assert data.shipped_model_dir("deepseek_v3") == MODEL
    assert data.shipped_model_dir() == data.DATA_DIR / "model"
    assert data.resolve_model("deepseek_v3") == str(MODEL)
    assert data.resolve_model(None) == str(data.DATA_DIR / "model")
    assert data.resolve_model("/some/dir") == "/some/dir"
    with pytest.raises(ValueError, match="qwen3_moe, deepseek_v3"):
        data.shipped_model_dir("mixtral")


def test_weights_bf16() -> None:
    """Every tensor in bf16, the selection bias too (the training script casts
    the whole model; transformers loads the bias into float32, where DeepSeek-V3
    keeps it, so the reference routes with the bf16-rounded bias exactly)."""
    with safe_open(MODEL / "model.safetensors", framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert any(k.endswith("e_score_correction_bias") for k in dtypes)
    assert set(dtypes.values()) == {"BF16"}


@pytest.fixture(scope="module")
def shipped():
    return load_shipped(MODEL)


def test_config_is_deepseek_v3_and_servable_widths(shipped) -> None:
    _, model = shipped
    cfg = model.config
    assert cfg.model_type == "deepseek_v3"
    assert cfg.n_group > 1 and cfg.topk_group < cfg.n_group
    assert cfg.n_shared_experts >= 1 and cfg.first_k_dense_replace >= 1
    # Marlin MoE (int4, group 64): hidden % 128 == 0, expert width % 64 == 0
    assert cfg.hidden_size % 128 == 0 and cfg.moe_intermediate_size % 64 == 0
    # the same tokenizer as the first shipped model (same corpus, same seed)
    first = json.loads((data.DATA_DIR / "model" / "tokenizer.json").read_text())
    mine = json.loads((MODEL / "tokenizer.json").read_text())
    assert first["model"]["vocab"] == mine["model"]["vocab"]


def test_routes_on_heldout_text(shipped) -> None:
    """Every MoE layer uses most of its experts, none takes over, the selection
    bias moved in training, and perplexity is far below a random model's."""
    tok, model = shipped
    sites = find_routers(model)
    cfg = model.config
    assert [s.layer for s in sites] == list(
        range(cfg.first_k_dense_replace, cfg.num_hidden_layers)
    )
    text = data.heldout_text_path().read_text("utf-8")
    ids = torch.tensor(tok(text, verbose=False)["input_ids"])
    starts = torch.linspace(0, ids.numel() - 512, 4).long().tolist()
    x = torch.stack([ids[s : s + 512] for s in starts])
    chosen: dict[int, torch.Tensor] = {}
    handles = [
        s.router.register_forward_hook(
            lambda _m, _a, out, layer=s.layer: chosen.__setitem__(layer, out[2])
        )
        for s in sites
    ]
    with torch.no_grad():
        out = model(input_ids=x, use_cache=False)
    for h in handles:
        h.remove()
    n_exp = cfg.n_routed_experts
    for layer, idx in chosen.items():
        load = torch.bincount(idx.reshape(-1), minlength=n_exp).float()
        share = load / load.sum()
        assert int((load > 0).sum()) == n_exp, f"layer {layer}: {load.tolist()}"
        assert share.max() < 3 / n_exp, f"layer {layer}: {load.tolist()}"
        bias = model.model.layers[layer].mlp.gate.e_score_correction_bias
        assert bias.dtype == torch.float32 and bias.abs().max() > 0
    vocab = cfg.vocab_size
    nll = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, vocab), x[:, 1:].reshape(-1)
    )
    log = json.loads((MODEL / "train_log.json").read_text())
    assert not log["stopped_early"]
    assert nll.exp().item() < 2 * log["heldout_perplexity_fp32"]
