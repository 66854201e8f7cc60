"""Property tests of the routing metrics (``vsraq_modifier/metrics/agreement.py``) over
random shapes, router kinds, ties, extreme and low-precision logits, and masks.

Documented behaviour checked here: every per-token value and every layer mean over
at least one token is finite and in [0, 1], also for routers whose own weights are
undefined (NaN/inf logits, sigmoid scores that underflow: their selected experts
count equally); a layer mean over zero tokens (all masked) is NaN with
``tokens == 0``; the only errors are ``ValueError`` for routings
of different token counts or a mask of the wrong size. Identical routings score
exactly 1 whatever the logits (ties included). The objective's own property tests
are tests/unit/objective/test_objective_properties.py; the metrics' hand-computed
values and streaming are in tests/unit/metrics/test_agreement.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsraq_modifier.metrics import METRIC_NAMES, RoutingAccumulator, token_metrics
from vsraq_modifier.routing import RouterSpec, route

#: ties (few distinct values), extremes, and ordinary values
VALUES = st.one_of(
    st.sampled_from([-3e38, -1e4, -30.0, -1.0, 0.0, 0.0, 0.5, 1.0, 30.0, 1e4, 3e38]),
    st.floats(-50.0, 50.0, allow_nan=False, width=32),
)
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@st.composite
def specs(draw) -> RouterSpec:
    kind = draw(st.sampled_from(["softmax", "sigmoid_grouped", "logits"]))
    if kind == "sigmoid_grouped":
        n_group = draw(st.sampled_from([1, 2, 4]))
        e = n_group * draw(st.integers(1, 4))
        topk_group = draw(st.integers(1, n_group))
        k = draw(st.integers(1, topk_group * (e // n_group)))
        bias = torch.tensor(draw(st.lists(VALUES, min_size=e, max_size=e)))
        return RouterSpec(
            e,
            k,
            score_fn="sigmoid",
            bias=bias.clamp(-1e3, 1e3) if draw(st.booleans()) else None,
            n_group=n_group,
            topk_group=topk_group,
            normalize=draw(st.booleans()),
            norm_eps=draw(st.sampled_from([0.0, 1e-20])),
            scaling=draw(st.sampled_from([1.0, 2.5])),
            sorted_topk=False,
        )
    e = draw(st.integers(1, 16))
    k = draw(st.integers(1, e))
    if kind == "logits":
        return RouterSpec(
            e, k, score_fn="logits", weight_fn="softmax_selected", score_dtype="input"
        )
    return RouterSpec(e, k, normalize=draw(st.booleans()))


@st.composite
def routings(draw):
    """(spec, reference logits, quantized logits, mask or None)."""
    spec = draw(specs())
    e = spec.num_experts
    t = draw(st.integers(0, 12))
    dtype = draw(st.sampled_from(DTYPES))
    ref = torch.tensor(draw(st.lists(VALUES, min_size=t * e, max_size=t * e)))
    how = draw(st.sampled_from(["same", "nudged", "free", "all_equal"]))
    if how == "same":
        q = ref.clone()
    elif how == "nudged":
        nudge = st.sampled_from([0.0, 1e-3, -0.5, 2.0])
        q = ref + torch.tensor(draw(st.lists(nudge, min_size=t * e, max_size=t * e)))
    elif how == "all_equal":
        ref = torch.full((t * e,), draw(VALUES))
        q = ref.clone()
    else:
        q = torch.tensor(draw(st.lists(VALUES, min_size=t * e, max_size=t * e)))
    mask = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=t, max_size=t)))
    mask = None if mask is None else torch.tensor(mask, dtype=torch.bool)
    if draw(st.booleans()):  # else 3e38 may overflow float16 to inf, and NaN/inf
        big = min(torch.finfo(dtype).max, torch.finfo(torch.float32).max)
        ref, q = ref.clamp(-big, big), q.clamp(-big, big)
    elif t and draw(st.booleans()):
        where = draw(st.integers(0, t * e - 1))
        q[where] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        if how in ("same", "all_equal"):
            ref[where] = q[where]
    ref, q = ref.view(t, e).to(dtype), q.view(t, e).to(dtype)
    return spec, ref, q, mask, how


def _finite_in_unit_interval(v: torch.Tensor) -> bool:
    return bool(torch.isfinite(v).all() and (v >= 0).all() and (v <= 1 + 1e-12).all())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routings())
def test_metrics_finite_bounded_and_exact_for_identical(case) -> None:
    spec, ref_logits, q_logits, mask, how = case
    reference, quantized = route(ref_logits, spec), route(q_logits, spec)
    values = token_metrics(reference, quantized)
    assert set(values) == set(METRIC_NAMES)
    for name, v in values.items():
        assert v.shape == (ref_logits.shape[0],), name
        assert _finite_in_unit_interval(v), (name, v)
    if how in ("same", "all_equal"):
        for name, v in values.items():
            assert bool((v == 1.0).all()), (name, v)
    acc = RoutingAccumulator()
    acc.update(3, reference, quantized, mask)
    (layer,) = acc.result()
    valid = ref_logits.shape[0] if mask is None else int(mask.sum())
    assert layer.layer == 3 and layer.tokens == valid
    means = [getattr(layer, name) for name in METRIC_NAMES]
    if valid == 0:
        assert all(math.isnan(m) for m in means)  # documented: no token, no mean
    else:
        assert all(0.0 <= m <= 1.0 + 1e-12 for m in means), means


@settings(max_examples=60, deadline=None)
@given(specs(), st.integers(0, 6), st.integers(1, 6))
def test_only_documented_errors(spec, t, extra) -> None:
    g = torch.Generator().manual_seed(t * 31 + extra)
    a = route(torch.randn(t, spec.num_experts, generator=g), spec)
    b = route(torch.randn(t + extra, spec.num_experts, generator=g), spec)
    with pytest.raises(ValueError, match="same token ids"):
        token_metrics(a, b)
    acc = RoutingAccumulator()
    with pytest.raises(ValueError, match="mask has"):
        acc.update(0, a, a, torch.ones(t + extra, dtype=torch.bool))
    assert acc.result() == []  # a refused update leaves nothing behind


def test_underflowing_sigmoid_router_counts_its_experts_equally() -> None:
    """Found by the fuzzing: selected sigmoid scores that all underflow to 0 give
    the router's own weights 0/0 = NaN; the metric used to turn them into NaN."""
    spec = RouterSpec(4, 2, score_fn="sigmoid", normalize=True)
    degenerate = route(torch.full((1, 4), -1e4), spec)
    assert torch.isnan(degenerate.weights).all()
    same_set = route(torch.tensor([[-1e4, -1e4, -2e4, -2e4]]), spec)
    values = token_metrics(degenerate, same_set)
    assert values["weight_overlap"].item() == pytest.approx(1.0)
    assert values["jaccard"].item() == 1.0


def test_disjoint_sets_never_overlap_below_zero() -> None:
    """Found by the fuzzing: 1 - |g - g*|_1 / 2 came out at -2.2e-16."""
    spec = RouterSpec(16, 10)
    ref = torch.full((1, 16), -3.0e38)
    q = ref.clone()
    q[0, 7] = -1e4
    values = token_metrics(route(ref, spec), route(q, spec))
    assert 0.0 <= values["weight_overlap"].item() <= 1.0
