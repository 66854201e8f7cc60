"""route() and its parts against hand-computed decisions: softmax, sigmoid with a
selection-only bias, group-limited selection, gpt-oss weights, dtypes, bad specs,
the per-token set Jaccard
(route() against each family's own router module: tests/unit/routers)."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.routing import (
    RouterSpec,
    dense_weights,
    group_mask,
    group_scores,
    route,
    selection_scores,
    set_jaccard,
)


def test_softmax_top_k_normalised() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    r = route(logits, RouterSpec(4, 2, normalize=True))
    p = torch.softmax(logits, -1)[0]
    assert r.indices.tolist() == [[1, 2]]
    expected = torch.stack([p[1], p[2]]) / (p[1] + p[2])
    torch.testing.assert_close(r.weights[0], expected)
    assert r.weights.dtype == logits.dtype


def test_bias_chooses_but_does_not_weigh() -> None:
    logits = torch.tensor([[0.0, 1.0, 0.5, 0.2]])
    bias = torch.tensor([2.0, 0.0, 0.0, 0.0])
    spec = RouterSpec(4, 1, score_fn="sigmoid", bias=bias, scaling=2.0)
    r = route(logits, spec)
    assert r.indices.tolist() == [[0]]  # only the bias lifts expert 0 to the top
    torch.testing.assert_close(r.weights[0, 0], 2.0 * torch.sigmoid(torch.tensor(0.0)))
    torch.testing.assert_close(selection_scores(logits, spec), logits.sigmoid() + bias)


def test_group_limited_selection_keeps_the_best_groups() -> None:
    # groups {0,1} {2,3} {4,5} {6,7}; group score = sum of its two best scores
    scores = torch.tensor([[0.9, -1.0, 0.5, 0.5, 0.1, 0.1, 0.6, 0.6]])
    spec = RouterSpec(8, 2, score_fn="logits", n_group=4, topk_group=2)
    expected = torch.tensor([[-0.1, 1.0, 0.2, 1.2]])
    torch.testing.assert_close(group_scores(scores, spec), expected)
    kept = [False, False, True, True, False, False, True, True]
    assert group_mask(scores, spec).tolist() == [kept]
    # expert 0 has the best score but its group is dropped
    assert sorted(route(scores, spec).indices[0].tolist()) == [6, 7]
    assert route(scores, RouterSpec(8, 2, score_fn="logits")).indices[0, 0] == 0


def test_gpt_oss_weights_are_a_softmax_over_the_selected_logits() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    r = route(logits, RouterSpec(4, 2, score_fn="logits", weight_fn="softmax_selected"))
    assert r.indices.tolist() == [[0, 2]]
    torch.testing.assert_close(
        r.weights[0], torch.softmax(torch.tensor([3.0, 2.0]), -1)
    )


def test_dtypes_follow_the_spec() -> None:
    logits = torch.randn(5, 8, dtype=torch.bfloat16)
    r = route(logits, RouterSpec(8, 2))
    assert r.scores.dtype == torch.float32 and r.weights.dtype == torch.bfloat16
    r32 = route(
        logits, RouterSpec(8, 2, weight_dtype="float32", logits_dtype="float32")
    )
    assert r32.weights.dtype == torch.float32 and r32.logits.dtype == torch.float32
    assert route(torch.randn(2, 3, 8), RouterSpec(8, 2)).indices.shape == (6, 2)


def test_dense_weights_scatter_and_differentiate() -> None:
    logits = torch.randn(4, 6, requires_grad=True)
    spec = RouterSpec(6, 2, normalize=True)
    r = route(logits.detach(), spec)
    dense = dense_weights(logits, r.indices, spec)
    assert dense.shape == (4, 6) and int((dense != 0).sum()) == 8
    torch.testing.assert_close(dense.gather(-1, r.indices), r.weights)
    (dense * torch.arange(6.0)).sum().backward()  # weights of each row sum to 1
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_experts=4, top_k=5), "top_k=5 must be in 1..num_experts=4"),
        (dict(num_experts=4, top_k=0), "top_k=0"),
        (dict(num_experts=6, top_k=2, n_group=4), "n_group=4 must divide"),
        (dict(num_experts=8, top_k=2, n_group=4, topk_group=5), "topk_group=5"),
    ],
)
def test_bad_specs_say_which_number(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouterSpec(**kwargs)


def test_logits_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(
        ValueError, match="router logits have 5 experts, spec expects 4"
    ):
        route(torch.zeros(2, 5), RouterSpec(4, 2))


def test_set_jaccard_counts_shared_experts_whatever_their_order() -> None:
    a = torch.tensor([[0, 1], [2, 3], [4, 5], [1, 0]])
    b = torch.tensor([[1, 0], [3, 6], [6, 7], [0, 1]])
    j = set_jaccard(a, b)
    assert j.dtype == torch.float64
    assert j.tolist() == [1.0, 1 / 3, 0.0, 1.0]
    # sets of different sizes (a router re-scored with another top-k)
    assert set_jaccard(torch.tensor([[0, 1, 2]]), torch.tensor([[2, 5]])).item() == 0.25
    assert set_jaccard(a[:0], b[:0]).shape == (0,)


def test_set_jaccard_is_the_reports_jaccard() -> None:
    from vsraq_modifier.metrics.agreement import token_metrics

    g = torch.Generator().manual_seed(0)
    spec = RouterSpec(8, 3)
    ref = route(torch.randn(200, 8, generator=g), spec)
    q = route(ref.logits + 0.5 * torch.randn(200, 8, generator=g), spec)
    expected = token_metrics(ref, q)["jaccard"]
    assert 0.0 < float(expected.min()) < float(expected.max()) == 1.0
    assert torch.equal(set_jaccard(ref.indices, q.indices), expected)
