"""RTN sensitivity per unit and scheme, and the combination across domains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsraq_modifier.allocate.schemes import parse_scheme, parse_schemes
from vsraq_modifier.allocate.sensitivity import (
    Measurement,
    combine,
    measure,
    quantized,
    rtn,
)
from vsraq_modifier.allocate.solve import solve
from vsraq_modifier.allocate.units import find_units
from vsraq_modifier.testing import tiny_model


def _chunks(n_domains=2, per=1, seq=24, seed=0, vocab=128):
    g = torch.Generator().manual_seed(seed)
    return {
        f"d{i}": [torch.randint(3, vocab, (seq,), generator=g) for _ in range(per)]
        for i in range(n_domains)
    }


def test_rtn_is_autoround_grid():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    q = rtn(w, parse_scheme("W2A16G32"))
    for group in q.reshape(-1, 32):
        assert group.unique().numel() <= 4  # 2 bits: at most 4 levels per group
    assert not torch.equal(q, w) and q.shape == w.shape


@pytest.mark.parametrize("mode", ["layer", "expert"])
def test_quantized_touches_only_its_unit_and_restores(mode):
    model = tiny_model("qwen3_moe")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unit = next(u for u in find_units(model, mode) if u.kind in ("experts", "expert"))
    with quantized(model, unit, parse_scheme("W2A16G32")):
        changed = {
            n for n, p in model.named_parameters() if not torch.equal(p, before[n])
        }
        assert changed == {p.param for p in unit.parts}
        if mode == "expert":
            p = model.get_parameter(unit.parts[0].param)
            others = [e for e in range(p.shape[0]) if e != unit.expert]
            assert torch.equal(p[others], before[unit.parts[0].param][others])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_measure_on_a_tiny_model():
    model = tiny_model("qwen3_moe")
    units = find_units(model)
    schemes = parse_schemes("W2A16G32,W8A16@32")
    chunks = _chunks()
    m = measure(model, units, schemes, chunks, progress=False)
    assert m.kl.shape == m.disagreement.shape == (2, len(units), 2)
    assert (m.kl >= 0).all() and (m.disagreement >= 0).all()
    # 2 bits hurts more than 8 bits, unit by unit (summed over domains)
    assert (m.kl[:, :, 0].sum(0) > m.kl[:, :, 1].sum(0)).all()
    # the last layer's experts have no router downstream
    last = max(i for i, u in enumerate(units) if u.kind == "experts")
    assert (m.disagreement[:, last] == 0).all()
    # an attention unit moves its own layer's router
    assert m.disagreement[:, 0, 0].sum() > 0
    assert m.forward_passes == (1 + len(units) * 2) * 2
    for usage in m.usage.values():
        assert torch.allclose(
            usage.sum(1), torch.ones(usage.shape[0], dtype=usage.dtype)
        )


def _two_domain_measurement() -> Measurement:
    """Domain "big" is hurt by unit 0 at low bits, domain "small" by unit 1."""
    kl = torch.zeros(2, 2, 2, dtype=torch.float64)
    kl[0, 0, 0], kl[0, 1, 0] = 1.0, 0.2
    kl[1, 0, 0], kl[1, 1, 0] = 0.0, 1.5
    return Measurement(
        domains=["big", "small"],
        units=["u0", "u1"],
        schemes=["low", "high"],
        kl=kl,
        disagreement=torch.zeros_like(kl),
        usage={},
        router_layers=[],
        tokens={"big": 900, "small": 100},
        forward_passes=0,
        seconds=0.0,
    )


def test_a_frequent_domain_does_not_decide_alone():
    m = _two_domain_measurement()
    cost, numel = np.array([[2, 4], [2, 4]]), np.array([1, 1])  # one unit can go high
    pooled, _, _ = combine(m, {"big": 0.9, "small": 0.1}, 0.0)
    balanced, per_domain, _ = combine(m, {"big": 0.5, "small": 0.5}, 0.0)
    assert solve(pooled.numpy(), cost, numel, 3.0).choice == (1, 0)  # big decides
    assert solve(balanced.numpy(), cost, numel, 3.0).choice == (0, 1)  # small counts
    assert torch.equal(per_domain, m.kl)


def test_auto_routing_weight_makes_both_terms_equal():
    m = _two_domain_measurement()
    m.disagreement[:, :, 0] = 0.5
    sens, _, a = combine(m, {"big": 0.5, "small": 0.5}, None)
    kl_total = float(m.kl.mean(0).sum())
    assert a * float(m.disagreement.mean(0).sum()) == pytest.approx(kl_total)
    assert float(sens.sum()) == pytest.approx(2 * kl_total)


@pytest.mark.parametrize("family", ["qwen2_moe", "nemotron_h"])
def test_replaying_upstream_layers_changes_nothing(family, monkeypatch):
    """Layers before the unit return their cached reference outputs: the numbers
    equal those of full passes."""
    import contextlib

    from vsraq_modifier.allocate import sensitivity

    model = tiny_model(family)
    units, schemes = find_units(model), parse_schemes("W2A16@16,W4A16@16")
    chunks = _chunks(n_domains=1, seq=16)
    fast = measure(model, units, schemes, chunks, progress=False)
    monkeypatch.setattr(
        sensitivity._LayerCache,
        "skipping",
        lambda self, before: contextlib.nullcontext(),
    )
    full = measure(model, units, schemes, chunks, progress=False)
    assert torch.equal(fast.kl, full.kl)
    assert torch.equal(fast.disagreement, full.disagreement)
