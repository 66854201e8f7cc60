"""Property tests: every term and its gradient stay finite over shapes, ties,
extreme logits (+-1e4), equal logits and masks, for every router kind."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from objective_cases import ALL_CONFIGS

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.objective import BlockObjective, RouterPair, routing_terms
from vsraq_modifier.routing import RouterSpec

VALUES = st.one_of(
    st.sampled_from([-1e4, -1.0, 0.0, 0.5, 1.0, 1e4]),
    st.floats(-30.0, 30.0, allow_nan=False, width=32),
)


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(["softmax", "grouped", "gptoss"]))
    if kind == "grouped":
        n_group = draw(st.sampled_from([2, 4]))
        per = draw(st.integers(1, 3))
        e = n_group * per
        topk_group = draw(st.integers(1, n_group))
        k = draw(st.integers(1, topk_group * per))
        bias = torch.tensor(
            draw(st.lists(st.floats(-1, 1, width=32), min_size=e, max_size=e))
        )
        spec = RouterSpec(
            e,
            k,
            score_fn="sigmoid",
            bias=bias,
            n_group=n_group,
            topk_group=topk_group,
            normalize=True,
            norm_eps=1e-20,
            scaling=2.5,
        )
    else:
        e = draw(st.integers(1, 8))
        k = draw(st.integers(1, e))
        spec = (
            RouterSpec(e, k, normalize=draw(st.booleans()))
            if kind == "softmax"
            else RouterSpec(e, k, score_fn="logits", weight_fn="softmax_selected")
        )
    t = draw(st.integers(1, 5))
    ref = draw(st.lists(VALUES, min_size=t * e, max_size=t * e))
    how = draw(st.sampled_from(["equal", "noise", "free"]))
    if how == "equal":
        z = list(ref)
    elif how == "noise":
        z = [r + draw(st.sampled_from([0.0, 1e-3, -0.5, 2.0])) for r in ref]
    else:
        z = draw(st.lists(VALUES, min_size=t * e, max_size=t * e))
    mask = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=t, max_size=t)))
    return spec, torch.tensor(z).view(t, e), torch.tensor(ref).view(t, e), mask


CONFIGS = [*ALL_CONFIGS, VSRAQConfig(temperature=1e-3), VSRAQConfig(margin=0.0)]


@settings(deadline=None, max_examples=60)
@given(cases(), st.sampled_from(CONFIGS))
def test_terms_and_gradients_are_finite(case, config):
    spec, z, ref, mask = case
    z = z.requires_grad_()
    m = None if mask is None else torch.tensor(mask)
    terms = routing_terms(RouterPair(z, ref, spec, mask=m), config)
    for name, value in terms.items():
        assert torch.isfinite(value), name
        assert value.item() >= 0, name
    if any(v.requires_grad for v in terms.values()):
        sum(v for v in terms.values() if v.requires_grad).backward()
        assert torch.isfinite(z.grad).all()
        if m is not None:
            assert (z.grad[~m] == 0).all()


@settings(deadline=None, max_examples=40)
@given(cases())
def test_block_objective_finite(case):
    spec, z, ref, mask = case
    z = z.requires_grad_()
    m = None if mask is None else torch.tensor(mask)
    obj = BlockObjective(VSRAQConfig())
    for _ in range(2):
        loss, terms = obj(
            [RouterPair(z, ref, spec, mask=m)], host_loss=torch.tensor(0.7)
        )
        assert torch.isfinite(loss) and all(v == v for v in terms.values())
    if loss.requires_grad:
        loss.backward()
        assert torch.isfinite(z.grad).all()


@settings(deadline=None, max_examples=40)
@given(cases())
def test_zero_at_reference_for_any_case(case):
    spec, _, ref, mask = case
    z = ref.clone().requires_grad_()
    m = None if mask is None else torch.tensor(mask)
    terms = routing_terms(RouterPair(z, ref, spec, mask=m), VSRAQConfig())
    assert all(v.item() == 0.0 for v in terms.values())
    if any(v.requires_grad for v in terms.values()):
        sum(terms.values()).backward()
        assert torch.equal(z.grad, torch.zeros_like(z))
