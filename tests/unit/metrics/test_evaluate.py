"""End-to-end evaluation on tiny random models of every family: identical models
agree exactly, a perturbed one does not, hooks read and force what the model runs."""

from __future__ import annotations

import math

import pytest
import torch

from vsraq_modifier.metrics import (
    RouterForcing,
    RouterNotCalledError,
    RoutingCapture,
    chunk_token_ids,
    evaluate_model,
    evaluate_routing,
)
from vsraq_modifier.routers import find_routers
from vsraq_modifier.testing import TINY_FAMILIES, tiny_model

TOKENS = torch.randint(0, 128, (96,), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_identical_models_agree_exactly(family: str) -> None:
    reference, copy = tiny_model(family, seed=3), tiny_model(family, seed=3)
    report = evaluate_routing(
        reference, [("copy", "", copy)], TOKENS, seq_len=48, oracle=True, progress=False
    )
    (m,) = report.models
    assert m.layers, "no MoE layer measured"
    for lm in m.layers:
        assert (lm.jaccard, lm.exact_match, lm.top1_agreement, lm.weight_overlap) == (
            1.0,
            1.0,
            1.0,
            1.0,
        ), lm
        assert lm.tokens == 96
    assert m.kl == 0.0
    assert m.perplexity == report.reference_perplexity
    # forcing a model to its own choice changes nothing
    assert m.oracle_perplexity == m.perplexity
    assert [lm.layer for lm in m.layers] == [s.layer for s in find_routers(reference)]


def test_perturbed_model_disagrees() -> None:
    reference, other = tiny_model("qwen3_moe"), tiny_model("qwen3_moe")
    with torch.no_grad():
        for p in other.model.layers[0].self_attn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ev, ref_ppl = evaluate_model(reference, other, TOKENS, seq_len=48, progress=False)
    assert all(lm.jaccard < 1.0 for lm in ev.layers)
    assert ev.kl > 0.0 and math.isfinite(ev.kl)
    assert ev.perplexity != ref_ppl
    assert ev.mean("exact_match") <= ev.mean("jaccard") < 1.0
    d = ev.to_dict()
    assert d["mean_jaccard"] == pytest.approx(sum(lm.jaccard for lm in ev.layers) / 3)


def test_chunks_and_token_counts() -> None:
    chunks = chunk_token_ids(torch.arange(129), 64)
    assert [c.numel() for c in chunks] == [64, 64]  # a 1-token tail predicts nothing
    report = evaluate_routing(
        tiny_model("qwen3_moe"), [], torch.arange(130) % 128, seq_len=64, progress=False
    )
    assert (report.tokens, report.predicted_tokens) == (130, 127)
    assert math.isfinite(report.reference_perplexity) and not report.models
    with pytest.raises(ValueError, match="at least 2"):
        chunk_token_ids([1, 2, 3], 1)


def test_capture_fails_when_a_router_does_not_run() -> None:
    model, other = tiny_model("qwen3_moe"), tiny_model("qwen3_moe")
    capture = RoutingCapture(find_routers(other))
    with capture, torch.no_grad():
        capture.reset()
        model(input_ids=TOKENS[None, :16])
        with pytest.raises(RouterNotCalledError, match="layers 0 \\(called 0x\\)"):
            capture.check_called_once()


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3", "gpt_oss"])
def test_forcing_reaches_the_experts(family: str) -> None:
    """The experts receive exactly the forced indices; forcing the model's own
    choice leaves the logits bit-identical."""
    model = tiny_model(family)
    sites = find_routers(model)
    ids = TOKENS[None, :32]
    seen: dict[int, torch.Tensor] = {}
    handles = [
        s.block.experts.register_forward_pre_hook(
            lambda mod, args, layer=s.layer: seen.__setitem__(layer, args[1].clone())
        )
        for s in sites
    ]
    capture = RoutingCapture(sites)
    forcing = RouterForcing(sites)
    try:
        with torch.no_grad():
            with capture:
                capture.reset()
                plain = model(input_ids=ids).logits
            forcing.targets = {k: r.indices for k, r in capture.routings.items()}
            with forcing:
                own = model(input_ids=ids).logits
            g = torch.Generator().manual_seed(0)
            k, e = sites[0].spec.top_k, sites[0].spec.num_experts
            forcing.targets = {
                s.layer: torch.stack(
                    [torch.randperm(e, generator=g)[:k] for _ in range(32)]
                )
                for s in sites
            }
            with forcing:
                forcing.reset()
                forced = model(input_ids=ids).logits
                forcing.check_called_once()
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(plain, own)
    for layer, target in forcing.targets.items():
        assert torch.equal(seen[layer].reshape(target.shape).long(), target), layer
    assert not torch.allclose(plain, forced)


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])
def test_identical_bfloat16_models_and_oracle(family: str) -> None:
    reference = tiny_model(family, seed=5, dtype=torch.bfloat16)
    copy = tiny_model(family, seed=5, dtype=torch.bfloat16)
    report = evaluate_routing(
        reference, [("copy", "", copy)], TOKENS, seq_len=48, oracle=True, progress=False
    )
    (m,) = report.models
    assert m.dtype == report.reference_dtype == "bfloat16"
    assert m.mean("jaccard") == 1.0 and m.kl == 0.0
    assert m.oracle_perplexity == m.perplexity == report.reference_perplexity
