"""``refit_routers`` (vsraq_modifier/refit_model.py, the loop behind ``vsraq
refit``) on tiny random models of the router kinds the shipped model lacks:
DeepSeek-V3 (sigmoid, selection-only correction bias, group-limited top-k) and
gpt-oss (linear bias, top-k of logits). Correctness only: random models say
nothing about which variant is best."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers.refit import fake_quantize
from vsraq_modifier.refit import RefitOptions
from vsraq_modifier.refit.model import refit_routers
from vsraq_modifier.routers import find_routers
from vsraq_modifier.testing import tiny_model


def _pair(family: str):
    reference = tiny_model(family, seed=1)
    g = torch.Generator().manual_seed(0)
    for site in find_routers(reference):
        with torch.no_grad():
            site.router.weight.mul_(4.0)  # routers that prefer some experts
            bias = getattr(site.router, "e_score_correction_bias", None)
            if bias is not None:
                bias.copy_(0.05 * torch.randn(bias.shape, generator=g))
    quantized = copy.deepcopy(reference)
    fake_quantize(quantized, bits=3)
    ids = torch.randint(2, reference.config.vocab_size, (8, 64), generator=g)
    return reference, quantized, list(ids.split(4))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "family, options",
    [
        ("deepseek_v3", RefitOptions(method="ridge", ridge=1e-3)),  # auto: logits
        ("deepseek_v3", RefitOptions(method="ridge", target="sigmoid", iters=2)),
        (
            "deepseek_v3",
            RefitOptions(method="ridge", target="sigmoid", correction_bias=True),
        ),
        (
            "deepseek_v3",
            RefitOptions(method="ridge", target="sigmoid", weights="boundary"),
        ),
        ("gpt_oss", RefitOptions(method="ridge", ridge=1e-3)),
    ],
)
def test_refit_routers_changes_only_kept_routers(family, options):
    reference, quantized, batches = _pair(family)
    before = _state(quantized)
    results = refit_routers(reference, quantized, batches, options, progress=False)
    after = _state(quantized)
    sites = find_routers(quantized)
    assert [s.layer for s, _ in results] == [s.layer for s in sites]
    router_keys = set()
    for site, res in results:
        prefix = next(n for n, m in quantized.named_modules() if m is site.router)
        keys = {k for k in before if k.startswith(prefix + ".")}
        router_keys |= keys
        changed = {k for k in keys if not torch.equal(before[k], after[k])}
        assert bool(changed) == res.accepted
        if res.accepted:
            assert res.agreement_after > res.agreement_before
            assert prefix + ".weight" in changed
            if family == "gpt_oss":
                assert prefix + ".bias" in changed
            c = prefix + ".e_score_correction_bias"
            if c in keys:
                assert (c in changed) == options.correction_bias
        for k in keys:
            assert after[k].dtype == before[k].dtype and torch.isfinite(after[k]).all()
    assert any(r.accepted for _, r in results)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in router_keys)
