"""Routing metrics against hand-computed values (notes/objective.md, "Metrics")."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vsraq_modifier.metrics import (
    RoutingAccumulator,
    first_expert,
    layer_metrics,
    token_metrics,
)
from vsraq_modifier.routing import RouterSpec, Routing, route


def _routing(
    scores: list[list[float]], indices: list[list[int]], weights: list[list[float]]
) -> Routing:
    s = torch.tensor(scores)
    return Routing(
        logits=s.log(),
        scores=s,
        indices=torch.tensor(indices),
        weights=torch.tensor(weights),
    )


# 3 tokens, 4 experts, k=2.
# token 0: same set {0,1}; the quantized router lists expert 1 first and scores it
#          higher -> top1 differs; weights (.625,.375) vs (.375,.625) -> overlap .75
# token 1: {3,2} vs {3,1}: jaccard 1/3; top1 3 both; overlap min(4/7, 8/15) = 8/15
# token 2: {0,1} vs {2,3}: all zero
REFERENCE = _routing(
    [[0.5, 0.3, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.35, 0.15, 0.1]],
    [[0, 1], [3, 2], [0, 1]],
    [[0.5, 0.3], [0.4, 0.3], [0.4, 0.35]],
)
QUANTIZED = _routing(
    [[0.3, 0.5, 0.1, 0.1], [0.1, 0.35, 0.15, 0.4], [0.1, 0.1, 0.4, 0.4]],
    [[1, 0], [3, 1], [2, 3]],
    [[0.5, 0.3], [0.4, 0.35], [0.4, 0.4]],
)


def test_hand_computed_per_token_values() -> None:
    m = token_metrics(REFERENCE, QUANTIZED)
    torch.testing.assert_close(
        m["jaccard"], torch.tensor([1, 1 / 3, 0], dtype=torch.float64)
    )
    assert m["exact_match"].tolist() == [1.0, 0.0, 0.0]
    assert m["top1_agreement"].tolist() == [0.0, 1.0, 0.0]
    torch.testing.assert_close(
        m["weight_overlap"], torch.tensor([0.75, 8 / 15, 0.0], dtype=torch.float64)
    )


def test_hand_computed_layer_means() -> None:
    lm = layer_metrics(REFERENCE, QUANTIZED, layer=5)
    assert lm.layer == 5 and lm.tokens == 3
    assert lm.jaccard == pytest.approx(4 / 9)
    assert lm.exact_match == pytest.approx(1 / 3)
    assert lm.top1_agreement == pytest.approx(1 / 3)
    assert lm.weight_overlap == pytest.approx((0.75 + 8 / 15) / 3)


def test_mask_excludes_tokens() -> None:
    lm = layer_metrics(REFERENCE, QUANTIZED, mask=torch.tensor([True, True, False]))
    assert lm.tokens == 2
    assert lm.jaccard == pytest.approx(2 / 3)
    assert lm.exact_match == pytest.approx(1 / 2)


def test_first_expert_orders_by_selection_score_not_position() -> None:
    # an unsorted top-k (DeepSeek-V3 family) may list the best expert second
    r = _routing([[0.1, 0.2, 0.6, 0.1]], [[1, 2]], [[0.2, 0.6]])
    assert first_expert(r).tolist() == [2]


def test_weight_overlap_ignores_scaling_and_normalisation() -> None:
    scaled = Routing(
        QUANTIZED.logits, QUANTIZED.scores, QUANTIZED.indices, QUANTIZED.weights * 2.5
    )
    a = token_metrics(REFERENCE, QUANTIZED)["weight_overlap"]
    b = token_metrics(REFERENCE, scaled)["weight_overlap"]
    torch.testing.assert_close(a, b)


def test_streaming_equals_one_batch() -> None:
    torch.manual_seed(0)
    spec = RouterSpec(num_experts=8, top_k=2, normalize=True)
    ref_logits, q_logits = torch.randn(50, 8), torch.randn(50, 8)
    whole = layer_metrics(route(ref_logits, spec), route(q_logits, spec))
    acc = RoutingAccumulator()
    for a, b in zip(ref_logits.split(16), q_logits.split(16)):
        acc.update(0, route(a, spec), route(b, spec))
    (streamed,) = acc.result()
    assert streamed.tokens == 50
    for name in ("jaccard", "exact_match", "top1_agreement", "weight_overlap"):
        assert getattr(streamed, name) == pytest.approx(getattr(whole, name))


SPECS = [
    RouterSpec(num_experts=8, top_k=2, normalize=True),
    RouterSpec(num_experts=8, top_k=3, normalize=False),
    RouterSpec(
        num_experts=8,
        top_k=2,
        score_fn="logits",
        weight_fn="softmax_selected",
        score_dtype="input",
    ),
    RouterSpec(
        num_experts=16,
        top_k=4,
        score_fn="sigmoid",
        normalize=True,
        norm_eps=1e-20,
        scaling=2.5,
        bias=torch.linspace(-0.1, 0.1, 16),
        n_group=4,
        topk_group=2,
        weight_dtype="float32",
        sorted_topk=False,
    ),
]


@pytest.mark.parametrize("spec", SPECS, ids=["softmax", "no-renorm", "gpt-oss", "dsv3"])
def test_identical_routing_scores_exactly_one(spec: RouterSpec) -> None:
    torch.manual_seed(1)
    logits = torch.randn(64, spec.num_experts)
    r = route(logits, spec)
    lm = layer_metrics(r, route(logits.clone(), spec))
    assert (lm.jaccard, lm.exact_match, lm.top1_agreement, lm.weight_overlap) == (
        1.0,
        1.0,
        1.0,
        1.0,
    )


def test_different_token_counts_are_refused() -> None:
    spec = RouterSpec(num_experts=4, top_k=2)
    with pytest.raises(ValueError, match="same token ids"):
        token_metrics(route(torch.randn(3, 4), spec), route(torch.randn(4, 4), spec))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 4))
def test_metric_bounds_and_order(seed: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    spec = RouterSpec(num_experts=6, top_k=k, normalize=bool(seed % 2))
    a = route(torch.randn(20, 6, generator=g), spec)
    b = route(torch.randn(20, 6, generator=g), spec)
    m = token_metrics(a, b)
    for v in m.values():
        assert ((v >= -1e-12) & (v <= 1 + 1e-12)).all()
    # an exact match means jaccard 1 and vice versa; jaccard is symmetric
    assert torch.equal(m["exact_match"] == 1, m["jaccard"] == 1)
    torch.testing.assert_close(m["jaccard"], token_metrics(b, a)["jaccard"])
    torch.testing.assert_close(
        m["weight_overlap"], token_metrics(b, a)["weight_overlap"]
    )
