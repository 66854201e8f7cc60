"""The mechanism inside AutoRound's real tuning loop: which tunable parameters the
routing objective reaches, and that it changes the chosen weights."""

from __future__ import annotations

import re

import pytest
import torch

from tests.helpers.autoround import (
    calib_ids,
    quantize,
    small_moe,
    spy_objective,
    tiny_tokenizer,
)
from vsraq_modifier.integrations.autoround import autoround
from vsraq_modifier.routing import route

EXPERT = re.compile(r"mlp\.experts\.(\d+)\.")


def _probe_block0(ar, into: dict) -> None:
    """On the objective's first call in layer 0, record the gradient of the
    routing loss alone w.r.t. every tunable parameter of the block (AutoRound's
    rounding ``value`` and min/max scales of each wrapped linear) and the experts
    the tuning forward routed tokens to."""
    q = ar.alg_composer.block_quantizer

    def probe(pairs, host_loss, loss):
        run = q.session
        if "grads" in into or run.index != 0:
            return
        params = {
            f"{name}.{key}": p
            for name, m in run.layer.named_modules()
            if hasattr(m, "orig_layer")
            for key, p in m.params.items()
        }
        grads = torch.autograd.grad(
            loss, list(params.values()), retain_graph=True, allow_unused=True
        )
        into["grads"] = {
            n: (torch.zeros_like(p) if g is None else g)
            for (n, p), g in zip(params.items(), grads, strict=True)
        }
        own = pairs[0]  # the block's own router on this tuning forward
        idx = route(own.logits.detach(), own.spec).indices
        into["any"] = set(idx.flatten().tolist())
        into["valid"] = set(idx[own.mask].flatten().tolist())
        into["keys"] = len(pairs)

    spy_objective(q, probe)


@pytest.mark.slow
@pytest.mark.parametrize("lookahead", [True, False], ids=["lookahead", "no_lookahead"])
def test_routing_gradient_reaches_routed_experts_only_with_lookahead(lookahead):
    # 16 experts, top-2, 16 tokens: some experts get tokens, some get none
    model = small_moe(num_experts=16, seed=3)
    ar = autoround(
        model,
        tiny_tokenizer(),
        loss="vsraq",
        lookahead=lookahead,
        iters=1,
        nsamples=2,
        seqlen=8,
        batch_size=2,
        dataset=calib_ids(2, 8),
        device_map="cpu",
    )
    ar.post_init()
    seen: dict = {}
    _probe_block0(ar, seen)
    ar.quantize()

    assert seen["keys"] == (2 if lookahead else 1)  # own router (+ next router)
    grads = seen["grads"]
    routed, unused = seen["valid"], set(range(16)) - seen["any"]
    assert routed and unused, "the test data must leave some experts without tokens"

    def expert_grads(e: int) -> dict[str, torch.Tensor]:
        return {
            n: g
            for n, g in grads.items()
            if EXPERT.search(n) and int(EXPERT.search(n).group(1)) == e
        }

    for e in unused:  # never ran: no gradient whatever the objective
        assert all(g.abs().sum() == 0 for g in expert_grads(e).values())
    attention_value = grads["self_attn.q_proj.value"]
    assert attention_value.abs().sum() > 0  # the own-router term is alive either way
    for e in routed:
        g = expert_grads(e)
        assert {n.rsplit(".", 2)[-2] for n in g} == {
            "gate_proj",
            "up_proj",
            "down_proj",
        }
        if lookahead:
            # the rounding of every projection of every routed expert gets a
            # routing gradient, and so do its min/max scales
            for proj in ("gate_proj", "up_proj", "down_proj"):
                assert g[f"mlp.experts.{e}.{proj}.value"].abs().sum() > 0, (e, proj)
                scales = [v for n, v in g.items() if proj in n and "scale" in n]
                assert any(v.abs().sum() > 0 for v in scales), (e, proj)
        else:
            # the block's own router is upstream of its experts: exactly zero
            assert all(v.abs().sum() == 0 for v in g.values()), e


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def three_runs():
    """plain AutoRound, loss=mse through the VSRAQ quantizer, loss=vsraq: same
    model, data and seed; the final (tuned, fake-quantized) weights of each."""
    out = {}
    for name, loss in (("plain", None), ("mse", "mse"), ("vsraq", "vsraq")):
        model = small_moe()
        ar = quantize(loss, model, iters=3, not_use_best_mse=True)
        out[name] = (_weights(model), ar)
    return out


@pytest.mark.slow
def test_mse_through_the_vsraq_quantizer_equals_plain_autoround(three_runs):
    plain, _ = three_runs["plain"]
    mse, ar = three_runs["mse"]
    assert type(ar.alg_composer.block_quantizer).__name__ == "VSRAQQuantizer"
    assert plain.keys() == mse.keys()
    for k in plain:
        assert torch.equal(plain[k], mse[k]), k


@pytest.mark.slow
def test_vsraq_changes_the_chosen_weights(three_runs):
    mse, _ = three_runs["mse"]
    vsraq, ar = three_runs["vsraq"]
    differ = [k for k in mse if not torch.equal(mse[k], vsraq[k])]
    # layer 0's experts (look-ahead gradient) and attention change; the router
    # gates are not quantized: they change only where the default re-fit kept a fit
    assert any(k.startswith("model.layers.0.mlp.experts.") for k in differ), differ
    assert any(k.startswith("model.layers.0.self_attn.") for k in differ), differ
    reports = ar.alg_composer.block_quantizer.reports
    refitted = {
        f"model.layers.{r.layer}.mlp.gate.weight"
        for r in reports
        if any("re-fitted" in v for v in r.refit.values())
    }
    assert {k for k in differ if k.endswith("mlp.gate.weight")} == refitted, differ
    assert [r.layer for r in reports] == [0, 1]
    assert all(r.iters == 3 for r in reports)
