"""routing_terms and BlockObjective: terms per loss, exact zeros at the reference,
validation errors, dtypes, masks, per-block normalisation, normalisers averaged
over ranks (threads and two gloo processes); property tests: every
term and its gradient stay finite over shapes, ties, extreme logits (+-1e4), equal
logits and masks, for every router kind."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.objective import ALL_CONFIGS, SPECS, softmax_spec
from tests.helpers.ranks import ThreadRanks, gloo_worker, rank_pairs, run_steps
from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.objective import (
    BlockObjective,
    NonFiniteRoutingError,
    RouterPair,
    routing_terms,
)
from vsraq_modifier.objective.combine import mean_over_ranks
from vsraq_modifier.routing import RouterSpec


def _pair(spec=None, t=6, noise=0.3, seed=0, mask=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    spec = spec or softmax_spec()
    ref = torch.randn(t, spec.num_experts, generator=g)
    z = ref + noise * torch.randn(t, spec.num_experts, generator=g)
    return RouterPair(z.to(dtype).requires_grad_(), ref.to(dtype), spec, mask=mask)


@pytest.mark.parametrize(
    ("config", "names"),
    [
        (VSRAQConfig(), {"value", "structure"}),
        (VSRAQConfig(value_weight=0.0), {"structure"}),
        (VSRAQConfig(structure_weight=0.0), {"value"}),
        (VSRAQConfig(loss="topk_mse"), {"topk_mse"}),
        (VSRAQConfig(loss="router_kl"), {"router_kl"}),
        (VSRAQConfig(loss="mse"), set()),
    ],
)
def test_terms_per_loss(config, names):
    terms = routing_terms(_pair(), config)
    assert set(terms) == names
    for t in terms.values():
        assert t.ndim == 0 and t.item() > 0


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("target", ["logits", "scores", "both"])
def test_exactly_zero_with_zero_gradient_at_reference(kind, target):
    spec = SPECS[kind]()
    ref = 2.0 * torch.randn(16, 8)
    ref[0] = 1.0  # all tied
    ref[1, :3] = 0.5  # a tie at the boundary
    z = ref.clone().requires_grad_()
    terms = routing_terms(RouterPair(z, ref, spec), VSRAQConfig(value_target=target))
    assert terms["value"].item() == 0.0 and terms["structure"].item() == 0.0
    (terms["value"] + terms["structure"]).backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_computed_in_float32(dtype):
    p16 = _pair(dtype=dtype, t=8)
    p32 = RouterPair(
        p16.logits.detach().float().requires_grad_(), p16.ref_logits.float(), p16.spec
    )
    for config in ALL_CONFIGS:
        t16, t32 = routing_terms(p16, config), routing_terms(p32, config)
        for name in t16:
            assert t16[name].dtype == torch.float32
            assert t16[name].item() == pytest.approx(t32[name].item(), rel=1e-5)
    sum(routing_terms(p16, VSRAQConfig()).values()).backward()
    assert p16.logits.grad.dtype == dtype and torch.isfinite(p16.logits.grad).all()


@pytest.mark.parametrize("field", ["logits", "ref_logits"])
def test_non_finite_logits_raise(field):
    pair = _pair()
    bad = getattr(pair, field).detach().clone()
    bad[1, 2], bad[3, 0] = float("nan"), float("inf")
    setattr(pair, field, bad)
    with pytest.raises(
        NonFiniteRoutingError, match=rf"RouterPair\.{field} has 2 non-finite"
    ):
        routing_terms(pair, VSRAQConfig())
    with pytest.raises(ValueError):  # it is a ValueError too
        BlockObjective(VSRAQConfig())([pair])


def test_padding_is_dropped_before_any_arithmetic():
    mask = torch.tensor([True, True, False, True, False, True])
    pair = _pair(mask=mask)
    logits = pair.logits.detach().clone()
    logits[2] = float("nan")  # garbage on a padding position
    logits[4] = 1e30
    pair.logits = logits.requires_grad_()
    kept = _pair()
    kept = RouterPair(
        kept.logits.detach()[mask].requires_grad_(), kept.ref_logits[mask], kept.spec
    )
    for config in ALL_CONFIGS:
        got, want = routing_terms(pair, config), routing_terms(kept, config)
        for name in got:
            assert got[name].item() == pytest.approx(want[name].item(), rel=1e-6)
    sum(routing_terms(pair, VSRAQConfig()).values()).backward()
    assert torch.isfinite(pair.logits.grad).all()
    assert (pair.logits.grad[~mask] == 0).all()


def test_mask_of_another_layout_and_wrong_size():
    spec = softmax_spec()
    pair = _pair(t=6, mask=torch.ones(2, 3, dtype=torch.bool))
    pair.logits = pair.logits.detach().reshape(2, 3, 8).requires_grad_()
    pair.ref_logits = pair.ref_logits.reshape(2, 3, 8)
    assert routing_terms(pair, VSRAQConfig())["value"].item() > 0
    with pytest.raises(ValueError, match="mask has 5 entries"):
        routing_terms(_pair(spec, mask=torch.ones(5, dtype=torch.bool)), VSRAQConfig())
    bad = _pair(spec)
    bad.ref_logits = bad.ref_logits[:, :7]
    with pytest.raises(ValueError, match="same shape"):
        routing_terms(bad, VSRAQConfig())


def test_pair_without_valid_tokens_contributes_zero():
    empty = _pair(mask=torch.zeros(6, dtype=torch.bool))
    terms = routing_terms(empty, VSRAQConfig())
    assert {k: v.item() for k, v in terms.items()} == {"value": 0.0, "structure": 0.0}
    obj = BlockObjective(VSRAQConfig())
    loss, logged = obj([empty])
    assert loss.item() == 0.0 and logged == {}
    # averaged over the pairs that have tokens only
    full = _pair(seed=1)
    alone, _ = BlockObjective(VSRAQConfig())([full])
    both, _ = BlockObjective(VSRAQConfig())([full, empty])
    assert both.item() == pytest.approx(alone.item())


def test_first_call_is_lambda_times_host_per_term():
    config = VSRAQConfig(value_weight=0.5, structure_weight=2.0)
    obj = BlockObjective(config)
    host = torch.tensor(3.0)
    pair = _pair()
    loss, terms = obj([pair], host_loss=host)
    assert loss.item() == pytest.approx(0.5 * 3.0 + 2.0 * 3.0, rel=1e-6)
    raw = routing_terms(pair, config)
    assert terms == pytest.approx({k: v.item() for k, v in raw.items()})
    assert obj.first == obj.last == terms
    # later calls: each term relative to its first value, host scale kept
    later = _pair(noise=0.6, seed=0)
    loss2, terms2 = obj([later], host_loss=torch.tensor(100.0))
    expected = 3.0 * (
        0.5 * terms2["value"] / terms["value"]
        + 2.0 * terms2["structure"] / terms["structure"]
    )
    assert loss2.item() == pytest.approx(expected, rel=1e-5)
    assert obj.first == terms and obj.last == terms2
    # a new block: normalisers and host scale are forgotten
    obj.reset()
    assert obj.first == {} and obj.last == {}
    loss3, _ = obj([later], host_loss=torch.tensor(10.0))
    assert loss3.item() == pytest.approx(0.5 * 10 + 2.0 * 10, rel=1e-6)


def test_baselines_use_value_weight():
    for loss_name in ("topk_mse", "router_kl"):
        obj = BlockObjective(VSRAQConfig(loss=loss_name, value_weight=0.25))
        loss, terms = obj([_pair()], host_loss=torch.tensor(2.0))
        assert set(terms) == {loss_name}
        assert loss.item() == pytest.approx(0.5, rel=1e-6)
    loss, terms = BlockObjective(VSRAQConfig(loss="mse"))([_pair()], torch.tensor(2.0))
    assert loss.item() == 0.0 and terms == {}


def test_pairs_are_normalised_each_and_averaged():
    obj = BlockObjective(VSRAQConfig(structure_weight=0.0))
    small, large = _pair(noise=0.01, seed=2), _pair(noise=1.0, seed=3)
    loss, terms = obj([small, large])
    assert loss.item() == pytest.approx(1.0, rel=1e-6)  # each router counts as 1
    v_small = routing_terms(small, obj.config)["value"].item()
    v_large = routing_terms(large, obj.config)["value"].item()
    assert terms["value"] == pytest.approx((v_small + v_large) / 2, rel=1e-6)
    loss.backward()
    assert small.logits.grad.abs().sum() > 0 and large.logits.grad.abs().sum() > 0


def test_slots_keep_a_router_s_weight_when_another_is_left_out():
    config = VSRAQConfig(structure_weight=0.0)
    own, ahead = _pair(seed=2), _pair(seed=3)
    obj = BlockObjective(config)
    both, _ = obj([own, ahead], host_loss=torch.tensor(1.0), slots=2)
    alone, _ = obj([own], host_loss=torch.tensor(1.0), slots=2)
    # both routers start at 1 * host0 each: their mean is 1; one of two slots: 1/2
    assert both.item() == pytest.approx(1.0, rel=1e-6)
    assert alone.item() == pytest.approx(0.5, rel=1e-6)
    unslotted, _ = BlockObjective(config)([own], host_loss=torch.tensor(1.0))
    assert unslotted.item() == pytest.approx(1.0, rel=1e-6)


def test_term_that_starts_at_zero_is_normalised_when_it_moves():
    obj = BlockObjective(
        VSRAQConfig(value_weight=0.0, structure_weight=1.0), floor=1e-8
    )
    pair = _pair()
    at_ref = RouterPair(
        pair.ref_logits.clone().requires_grad_(), pair.ref_logits, pair.spec
    )
    loss0, terms0 = obj([at_ref], host_loss=torch.tensor(1.0))
    assert loss0.item() == 0.0 and terms0 == {"structure": 0.0}
    loss1, _ = obj([pair], host_loss=torch.tensor(5.0))
    assert loss1.item() == pytest.approx(1.0, rel=1e-6)  # lambda * host0, not 1/floor
    assert obj.first == {"structure": 0.0}


def test_routing_loss_has_gradient_for_the_host():
    pair = _pair()
    host = (pair.logits.detach() * 0 + 1).sum().requires_grad_()
    loss, _ = BlockObjective(VSRAQConfig())([pair], host_loss=host)
    (host + loss).backward()
    assert pair.logits.grad.abs().sum() > 0


# --- properties ---

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


# --- several ranks: the normalisers averaged over them ---


def _local(rank: int) -> dict[str, float]:
    """Rank ``rank``'s own start values (no reduce)."""
    return run_steps(BlockObjective(VSRAQConfig()), rank)[1]


def test_ranks_end_with_the_same_normalisers_their_mean():
    ranks = ThreadRanks(2)
    objectives = [
        BlockObjective(VSRAQConfig(), reduce=ranks.reduce_for(r)) for r in (0, 1)
    ]
    results = ranks.run(lambda r: run_steps(objectives[r], r))
    (_, norms0), (_, norms1) = results
    own = [_local(0), _local(1)]
    assert own[0] != own[1]  # each rank alone would weight the terms its own way
    assert norms0 == norms1  # bit for bit
    assert set(norms0) == {
        "-1/host",
        *(f"{i}/{n}" for i in (0, 1) for n in ("value", "structure")),
    }
    for key, value in norms0.items():
        assert value == pytest.approx((own[0][key] + own[1][key]) / 2, rel=1e-12)
    assert ranks.calls == [1, 1]  # one reduce per block, at its first call


def test_identity_reduce_is_the_single_process_objective():
    ident = BlockObjective(VSRAQConfig(), reduce=lambda v: v)
    assert run_steps(ident, 0) == run_steps(BlockObjective(VSRAQConfig()), 0)


def _at_ref(pair: RouterPair) -> RouterPair:
    return RouterPair(
        pair.ref_logits.clone().requires_grad_(), pair.ref_logits, pair.spec
    )


def test_start_at_zero_is_decided_on_the_reduced_values():
    """A term at exactly 0 on one rank takes the other rank's start value; one at
    0 on every rank stays unset on every rank until it moves somewhere, and then
    both ranks reduce again, at the same call."""
    config = VSRAQConfig(value_weight=0.0, structure_weight=1.0)
    ranks = ThreadRanks(2)
    objectives = [BlockObjective(config, reduce=ranks.reduce_for(r)) for r in (0, 1)]
    moving = [_pair(seed=5), _pair(seed=6, noise=0.8)]

    def work(rank: int) -> list[dict]:
        obj, seen = objectives[rank], []
        # call 0: rank 0's router 0 is at the reference, both ranks' router 1 is
        zero0 = _at_ref(moving[0]) if rank == 0 else moving[rank]
        obj([zero0, _at_ref(moving[1])], host_loss=torch.tensor(1.0), slots=2)
        seen.append(dict(obj.normalisers))
        # call 1: router 1 moves on rank 1 only
        ahead = moving[1] if rank == 1 else _at_ref(moving[1])
        obj([moving[rank], ahead], host_loss=torch.tensor(2.0), slots=2)
        seen.append(dict(obj.normalisers))
        # call 2: everything set: no reduce
        obj([moving[rank], moving[1]], host_loss=torch.tensor(3.0), slots=2)
        seen.append(dict(obj.normalisers))
        return seen

    seen0, seen1 = ranks.run(work)
    assert seen0 == seen1
    structure = [routing_terms(p, config)["structure"].item() for p in moving]
    first, second, third = seen0
    assert (1, "structure") not in first  # 0 on both ranks: unset on both
    assert first[(0, "structure")] == pytest.approx(structure[1])  # rank 1's only
    assert first[(-1, "host")] == 1.0
    assert second[(1, "structure")] == pytest.approx(structure[1])
    assert third == second
    assert ranks.calls == [2, 2]


def test_reduce_of_different_pair_counts_fails_instead_of_mixing():
    ranks = ThreadRanks(2)
    objectives = [
        BlockObjective(VSRAQConfig(), reduce=ranks.reduce_for(r)) for r in (0, 1)
    ]
    with pytest.raises(RuntimeError, match="different shapes"):
        ranks.run(lambda r: objectives[r](rank_pairs(r, 0, routers=1 + r)))


def test_mean_over_ranks_without_a_process_group_is_the_identity():
    values = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert mean_over_ranks(values) is values


def test_two_gloo_processes_share_their_normalisers(tmp_path):
    """Two real processes (gloo, CPU) with ``mean_over_ranks``."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(
        gloo_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2
    )
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got[0]["normalisers"] == got[1]["normalisers"]
    own = [_local(0), _local(1)]
    for key, value in got[0]["normalisers"].items():
        assert value == pytest.approx((own[0][key] + own[1][key]) / 2, rel=1e-12)
    assert got[0]["losses"] != got[1]["losses"]  # each rank's own samples
