"""Structure alignment (margin variant): hand values, the two-stage group boundary,
shift invariance, restoring a flipped set, gradcheck."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.objective import (
    SPECS,
    logits_spec,
    prep_of,
    softmax_spec,
    weights_of,
)
from vsraq_modifier.objective import structure_term
from vsraq_modifier.objective.structure import boundary_per_token, order_per_token
from vsraq_modifier.routing import group_mask, route

REF = torch.tensor([[4.0, 3.0, 1.0, 0.0], [4.0, 2.0, 1.5, 0.0]])  # margins 2, 0.5


def test_boundary_and_order_by_hand():
    spec = logits_spec(4, 2)
    z = torch.tensor([[4.0, 1.5, 2.0, 0.0], [3.0, 2.8, 1.5, 0.0]], requires_grad=True)
    prep = prep_of(z, REF, spec)
    # token 0: delta_t = min(1, 2) = 1; gap = 1.5 - 2 = -0.5 -> 1.5
    # token 1: delta_t = min(1, 0.5) = 0.5; gap = 2.8 - 1.5 = 1.3 -> 0
    assert boundary_per_token(prep, 1.0).tolist() == pytest.approx([1.5, 0.0])
    # order: token 0: gap* 1, target 1, gap 2.5 -> 0; token 1: gap* 2, target 1, gap 0.2
    assert order_per_token(prep, 1.0).tolist() == pytest.approx([0.0, 0.8])
    w = weights_of(prep)
    expected = float((w * torch.tensor([1.5, 0.8])).mean())
    loss = structure_term(prep, w, delta=1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # token 0 pushes expert 1 up and expert 2 down; token 1 pushes 0 up and 1 down
    g = z.grad / (w[:, None] / 2)
    expected_grad = torch.tensor([[0.0, -1, 1, 0], [-1, 1, 0, 0]])
    torch.testing.assert_close(g, expected_grad)


def test_target_never_exceeds_the_reference_gap():
    spec = logits_spec(4, 2)
    # token 1 has m* = 0.5 < delta = 1: its target is 0.5, token 0's is 1
    z = torch.tensor([[4.0, 3.0, 1.0, 0.0], [4.0, 1.9, 1.5, 0.0]])
    prep = prep_of(z, REF, spec)
    assert boundary_per_token(prep, 1.0).tolist() == pytest.approx([0.0, 0.1], abs=1e-6)
    # the same gap of 0.6 is enough for token 1, not for token 0
    z = torch.tensor([[4.0, 1.6, 1.0, 0.0], [4.0, 2.1, 1.5, 0.0]])
    prep = prep_of(z, REF, spec)
    assert boundary_per_token(prep, 1.0).tolist() == pytest.approx([0.4, 0.0], abs=1e-6)


def _grouped_logits_spec():
    # groups {0,1,2}, {3,4,5}; one group kept; group score = sum of its best two
    return logits_spec(6, 2, n_group=2, topk_group=1)


GREF = torch.tensor([[5.0, 4.0, 0.0, 4.5, 1.0, 0.0]])  # A = 9 kept, B = 5.5 rejected


def test_rejected_group_expert_is_never_pushed():
    # expert 3 (rejected group) outscores selected expert 1 in both models
    z = torch.tensor([[5.0, 1.0, 2.0, 4.5, 1.0, 0.0]], requires_grad=True)
    prep = prep_of(z, GREF, _grouped_logits_spec())
    # group stage: A = 7, B = 5.5, gap 1.5 >= 1: 0; expert stage: 1 - (1 - 2) = 2
    assert boundary_per_token(prep, 1.0).tolist() == pytest.approx([2.0])
    boundary_per_token(prep, 1.0).sum().backward()
    assert z.grad.tolist() == [[0.0, -1.0, 1.0, 0.0, 0.0, 0.0]]


def test_group_stage_hinge_by_hand():
    z = torch.tensor([[5.0, 4.0, 0.0, 4.5, 4.2, 0.0]], requires_grad=True)
    prep = prep_of(z, GREF, _grouped_logits_spec())
    # group gap 9 - 8.7 = 0.3 < delta_g = min(1, 3.5): 0.7; expert stage 4 >= 1: 0
    assert boundary_per_token(prep, 1.0).tolist() == pytest.approx([0.7], abs=1e-6)
    boundary_per_token(prep, 1.0).sum().backward()
    # the groups' best two experts move: kept group up, rejected group down
    torch.testing.assert_close(z.grad, torch.tensor([[-1.0, -1, 0, 1, 1, 0]]))


def test_softmax_structure_invariant_to_a_shared_shift():
    g = torch.Generator().manual_seed(3)
    spec = softmax_spec()
    ref = torch.randn(16, 8, generator=g)
    z = ref + 0.5 * torch.randn(16, 8, generator=g)

    def loss(x):
        prep = prep_of(x, ref, spec)
        return float(structure_term(prep, weights_of(prep), delta=0.05))

    base = loss(z)
    assert base > 0
    assert loss(z + 5.0) == pytest.approx(base, rel=1e-5)
    assert loss(z - 11.0) == pytest.approx(base, rel=1e-5)


def _sets(logits, spec):
    return route(logits, spec).indices.sort(dim=-1).values


@pytest.mark.parametrize("kind", ["softmax", "grouped", "gptoss"])
def test_gradient_steps_restore_a_flipped_set(kind):
    g = torch.Generator().manual_seed(4)
    spec = SPECS[kind]()
    ref = 2.0 * torch.randn(8, 8, generator=g)
    z = ref.clone()
    chosen = route(ref, spec)
    # swap the weakest selected expert with the strongest unselected one of the
    # selected groups (a flip the router could actually make)
    scores = chosen.scores.masked_fill(
        torch.zeros_like(ref, dtype=torch.bool).scatter(-1, chosen.indices, True), -1e9
    )
    scores = scores.masked_fill(~group_mask(chosen.scores, spec), -1e9)
    out = scores.argmax(dim=-1, keepdim=True)
    weakest = chosen.indices.gather(
        -1, chosen.scores.gather(-1, chosen.indices).argmin(dim=-1, keepdim=True)
    )
    zi, zo = z.gather(-1, weakest), z.gather(-1, out)
    z = z.scatter(-1, weakest, zo).scatter(-1, out, zi).requires_grad_()
    assert not torch.equal(_sets(z.detach(), spec), _sets(ref, spec))
    opt = torch.optim.SGD([z], lr=50.0 if kind != "gptoss" else 5.0)
    for _ in range(300):
        opt.zero_grad()
        prep = prep_of(z, ref, spec)
        loss = structure_term(prep, weights_of(prep), delta=0.05)
        if loss.item() == 0.0:
            break
        loss.backward()
        opt.step()
    assert torch.equal(_sets(z.detach(), spec), _sets(ref, spec))


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_structure_gradcheck(kind):
    g = torch.Generator().manual_seed(5)
    spec = SPECS[kind]()
    ref = 2.0 * torch.randn(6, 8, generator=g, dtype=torch.float64)
    z0 = (
        ref + 0.7 * torch.randn(6, 8, generator=g, dtype=torch.float64)
    ).requires_grad_()

    def f(z):
        prep = prep_of(z, ref, spec)
        return structure_term(prep, weights_of(prep), delta=0.05)

    assert f(z0).item() > 0
    assert torch.autograd.gradcheck(f, (z0,))


def test_two_stage_boundary_gradcheck():
    # both stages violated: group B (8.7) above A (7), expert 2 above selected 1
    z0 = torch.tensor([[5.0, 1.0, 2.0, 4.5, 4.2, 0.0]], dtype=torch.float64)
    ref = GREF.double()
    spec = _grouped_logits_spec()

    def f(z):
        return boundary_per_token(prep_of(z, ref, spec), 1.0).sum()

    # group: 1 - (7 - 8.7) = 2.7; experts: 1 - (1 - 2) = 2
    assert f(z0).item() == pytest.approx(4.7)
    assert torch.autograd.gradcheck(f, (z0.requires_grad_(),))
