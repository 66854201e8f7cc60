"""set_nll: exact-k subset distribution against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.helpers.objective import (
    SPECS,
    grouped_spec,
    prep_of,
    softmax_spec,
    weights_of,
)
from vsraq_modifier.objective import log_esp, set_nll_term
from vsraq_modifier.objective.set_nll import ranking_logits, set_nll_per_token


def _brute_log_esp(u: list[float], k: int) -> float:
    return math.log(
        sum(
            math.exp(sum(u[i] for i in s))
            for s in itertools.combinations(range(len(u)), k)
        )
    )


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_log_esp_matches_enumeration(k):
    u = torch.randn(4, 5, dtype=torch.float64) * 3
    got = log_esp(u, k)
    for t in range(4):
        assert float(got[t]) == pytest.approx(
            _brute_log_esp(u[t].tolist(), k), rel=1e-12
        )


def test_log_esp_is_stable_for_large_logits():
    u = torch.tensor([[1e4, 1e4, -1e4, 0.0]])
    # e_2 ~ exp(2e4) * (1 + tiny): log is 2e4
    assert float(log_esp(u, 2)) == pytest.approx(2e4)
    assert float(log_esp(u.double(), 2)) == pytest.approx(2e4)


def _brute_set_nll(z, ref, spec, prep):
    """log P(S*|u*) - log P(S*|u) by enumerating every allowed k-subset."""
    u, u_ref = ranking_logits(z, prep), ranking_logits(ref, prep)
    out = []
    for t in range(z.shape[0]):
        allowed = prep.ref_group_experts[t].nonzero().flatten().tolist()
        star = set(prep.ref_indices[t].tolist())
        subsets = list(itertools.combinations(allowed, spec.top_k))
        assert tuple(sorted(star)) in subsets

        def logp(v):
            v = v[t].tolist()
            norm = math.log(sum(math.exp(sum(v[i] for i in s)) for s in subsets))
            return sum(v[i] for i in star) - norm

        out.append(logp(u_ref) - logp(u))
    return out


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_set_nll_matches_enumeration(kind):
    g = torch.Generator().manual_seed(6)
    spec = SPECS[kind](e=8, k=3)
    ref = torch.randn(5, 8, generator=g, dtype=torch.float64)
    z = ref + 0.5 * torch.randn(5, 8, generator=g, dtype=torch.float64)
    prep = prep_of(z, ref, spec)
    got = set_nll_per_token(prep).tolist()
    assert got == pytest.approx(_brute_set_nll(z, ref, spec, prep), rel=1e-9, abs=1e-12)


def test_sigmoid_ranking_logits_follow_the_biased_scores():
    spec = grouped_spec()
    z = torch.randn(4, 8)
    prep = prep_of(z, z.clone(), spec)
    u = ranking_logits(z, prep)
    kept = prep.ref_group_experts
    # where defined, u ranks the experts exactly as the biased scores do
    c = prep.ref_scores
    for t in range(4):
        idx = kept[t].nonzero().flatten()
        assert torch.equal(u[t, idx].argsort(), c[t, idx].argsort())
        assert (u[t, ~kept[t]] <= -1e29).all()


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_set_nll_zero_at_reference(kind):
    spec = SPECS[kind]()
    ref = torch.randn(6, 8)
    z = ref.clone().requires_grad_()
    prep = prep_of(z, ref, spec)
    loss = set_nll_term(prep, weights_of(prep))
    assert loss.item() == 0.0
    loss.backward()
    # clamped: a stationary point (unclamped, it rewarded a more confident set)
    assert z.grad.abs().sum() == 0


def test_set_nll_term_ignores_a_more_confident_set():
    spec = softmax_spec(4, 2)
    ref = torch.tensor([[2.0, 1.0, 0.0, -1.0], [2.0, 1.0, 0.0, -1.0]])
    z = torch.tensor([[3.0, 2.0, 0.0, -1.0], [1.0, 1.0, 1.0, -1.0]]).requires_grad_()
    prep = prep_of(z, ref, spec)
    per_token = set_nll_per_token(prep)
    assert per_token[0] < 0 < per_token[1]
    loss = set_nll_term(prep, torch.ones(2))
    assert loss.item() == pytest.approx(per_token[1].item() / 2)
    loss.backward()
    assert z.grad[0].abs().sum() == 0 and z.grad[1].abs().sum() > 0


def test_set_nll_lower_when_reference_set_more_likely():
    spec = softmax_spec(4, 2)
    ref = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    worse = torch.tensor([[1.0, 1.0, 1.0, -1.0]])
    better = torch.tensor([[3.0, 2.0, 0.0, -1.0]])
    vals = [set_nll_per_token(prep_of(z, ref, spec)).item() for z in (worse, better)]
    assert vals[0] > 0 > vals[1]


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_set_nll_gradcheck(kind):
    g = torch.Generator().manual_seed(7)
    spec = SPECS[kind]()
    ref = torch.randn(4, 8, generator=g, dtype=torch.float64)
    z0 = (
        ref + 0.5 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    ).requires_grad_()

    def f(z):
        prep = prep_of(z, ref, spec)
        return set_nll_term(prep, weights_of(prep))

    assert torch.autograd.gradcheck(f, (z0,))
