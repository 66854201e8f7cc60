"""BlockSession alone, on a tiny model, with no host: the reference is captured,
tuning steps add exactly nothing at the reference and a gradient away from it,
agreement is measured before and after, NaN/inf stop naming the layer."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.guards import NonFiniteTuningError
from vsraq_modifier.objective import BlockObjective
from vsraq_modifier.session import BlockSession, ModelRouting, Phase
from vsraq_modifier.testing import tiny_model

SAMPLES, SEQ = 4, 8


class _Block:
    """Layer 0 of a tiny Qwen3-MoE and its calibration inputs, driven the way a
    host drives a block (forward on sample indices)."""

    def __init__(self, config: VSRAQConfig) -> None:
        torch.manual_seed(0)
        self.model = tiny_model("qwen3_moe", num_hidden_layers=2)
        self.layer = self.model.model.layers[0]
        ids = torch.randint(3, 100, (SAMPLES, SEQ))
        with torch.no_grad():
            hidden = self.model.model.embed_tokens(ids)
        positions = torch.arange(SEQ)[None]
        self.rotary = self.model.model.rotary_emb(hidden[:1], positions)
        self.inputs = [hidden[i : i + 1] for i in range(SAMPLES)]
        self.routing = ModelRouting(self.model, config)
        objective = BlockObjective(config) if config.is_routing_loss else None
        self.session = self.routing.open_block(
            0, self.layer, objective=objective, mask_layer=0
        )

    def forward(self, indices: list[int]) -> torch.Tensor:
        x = torch.cat([self.inputs[i] for i in indices])
        cos, sin = self.rotary
        rot = (cos.expand(len(indices), -1, -1), sin.expand(len(indices), -1, -1))
        out = self.layer(x, position_embeddings=rot, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    def reference(self) -> None:
        self.session.capture_reference()
        with torch.no_grad():
            for i in range(SAMPLES):
                self.forward([i])
        self.session.start(
            nsamples=SAMPLES,
            inputs=self.inputs,
            forward=self.forward,
            calls_per_iter=1,
            batch_size=2,
        )


def test_open_block_has_own_router_and_lookahead() -> None:
    block = _Block(VSRAQConfig())
    session = block.session
    assert isinstance(session, BlockSession) and session.phase is Phase.REFERENCE
    assert [s.layer for s in session.own] == [0]
    assert session.path is not None and session.path.site.layer == 1
    assert block.routing.needs_session(1) and block.routing.index_of(block.layer) == 0
    # the last layer has no router after it: with look-ahead off, only its own
    off = _Block(VSRAQConfig(lookahead=False))
    assert off.session.path is None


def test_reference_then_steps_then_report() -> None:
    block = _Block(VSRAQConfig(best_iteration="total"))
    block.reference()
    session = block.session
    assert session.ref.samples == SAMPLES
    assert set(session.ref.keys()) == {0, "ahead"}
    session.begin_tuning()
    assert session.phase is Phase.TUNE
    assert session.before.exact_match() == {0: 1.0, 1: 1.0}  # unchanged block

    host = torch.tensor(0.5, requires_grad=True)
    block.forward([0, 1])
    first = session.step_loss(host, [0, 1])
    # each term is normalised by its own first value and scaled to the host loss
    # (docs/objective.md): on the first step it adds lambda x host per term
    assert float(first) == pytest.approx(0.5 * (1 + 1.0 + 0.25), rel=1e-5)

    with torch.no_grad():  # move the attention: the routers see other inputs
        block.layer.self_attn.o_proj.weight.mul_(3.0)
    block.forward([2, 3])
    total = session.step_loss(host, [2, 3])
    assert float(total) > float(first)  # far from the reference now
    total.backward()
    assert block.layer.self_attn.o_proj.weight.grad.abs().sum() > 0
    assert session.iteration == 2

    report = session.finish()
    assert report.layer == 0 and report.iters == 2
    assert report.agreement_before == {"L0": 1.0, "L1 (look-ahead)": 1.0}
    assert set(report.agreement_after) == set(report.agreement_before)
    # 8 experts on each of 2 routers, and layer 1's frozen attention output (the
    # default lookahead_attention: reference), all fp16
    hidden = block.model.config.hidden_size
    assert report.reference_bytes == SAMPLES * SEQ * (8 * 2 + hidden) * 2


def test_agreement_passes_route_the_same_first_samples_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log line's before and after passes route the first MEASURE_SAMPLES
    samples, the same ones, in batches of the host's batch size."""
    monkeypatch.setattr("vsraq_modifier.session.block.MEASURE_SAMPLES", 3)
    block = _Block(VSRAQConfig(router_refit="none"))  # its pass routes all 4
    block.reference()
    seen: list[list[int]] = []
    forward = block.forward

    def counting(indices: list[int]) -> torch.Tensor:
        seen.append(list(indices))
        return forward(indices)

    block.session._forward = counting
    block.session.begin_tuning()
    assert seen == [[0, 1], [2]]  # batch_size 2, capped at 3 of the 4 samples
    seen.clear()
    block.session.finish()
    assert seen == [[0, 1], [2]]


def test_best_on_host_gives_the_host_its_own_value_and_the_full_gradient() -> None:
    """The safeguard: the loss the host compares iterations on is its own, bit
    for bit; the gradient is the routing objective's too; the kept iteration is
    the one with the lowest host loss, where the total would have kept another."""
    grads = {}
    for rule in ("host", "total"):
        block = _Block(VSRAQConfig(best_iteration=rule))
        block.reference()
        session = block.session
        session.begin_tuning()
        values = []
        for step, (host_value, scale) in enumerate([(0.5, 1.0), (0.3, 4.0)]):
            with torch.no_grad():  # step 1: the routers see other inputs
                block.layer.self_attn.o_proj.weight.mul_(scale)
            host = torch.tensor(host_value, requires_grad=True)
            block.layer.zero_grad()
            block.forward([2 * step, 2 * step + 1])
            loss = session.step_loss(host, [2 * step, 2 * step + 1])
            loss.backward()
            values.append(float(loss))
        grads[rule] = block.layer.self_attn.o_proj.weight.grad.clone()
        report = session.finish()
        if rule == "host":
            # float32 host losses, returned bit for bit
            assert values == [float(torch.tensor(0.5)), float(torch.tensor(0.3))]
            assert session.kept_iteration() == 1 and report.kept_iter == 1
            assert "kept iter 1 on host loss" in report.line()
        else:
            assert values[1] > values[0] > 0.5  # routing terms counted
            assert session.total_iters == pytest.approx(values)
            assert session.kept_iteration() == 0  # the total prefers iteration 0
            assert report.kept_on == "total"
    assert grads["host"].abs().sum() > 0
    torch.testing.assert_close(grads["host"], grads["total"])


def test_mse_session_only_measures() -> None:
    block = _Block(VSRAQConfig(loss="mse"))
    block.reference()
    block.session.begin_tuning()
    host = torch.tensor(0.25)
    block.forward([0])
    assert block.session.step_loss(host, [0]) is host


def test_reference_must_cover_the_tuned_samples() -> None:
    block = _Block(VSRAQConfig())
    block.session.capture_reference()
    with torch.no_grad():
        block.forward([0])
    with pytest.raises(RuntimeError, match="cover 1 samples.*tuned on 4"):
        block.session.start(
            nsamples=SAMPLES,
            inputs=block.inputs,
            forward=block.forward,
            calls_per_iter=1,
        )


def test_non_finite_host_loss_stops_naming_the_layer() -> None:
    block = _Block(VSRAQConfig())
    block.reference()
    block.session.begin_tuning()
    block.forward([0])
    with pytest.raises(NonFiniteTuningError, match="vsraq layer 0: the block loss"):
        block.session.step_loss(torch.tensor(float("nan")), [0])


def test_overflowing_routing_terms_stop_before_tuning_on() -> None:
    """A finite host loss with routing terms float32 cannot hold: the total the
    optimiser sees is checked too (the weights are bounded for that reason)."""

    class Overflowing(BlockObjective):
        def __call__(self, pairs, host_loss=None, slots=None):
            return torch.tensor(float("inf")), {}

    block = _Block(VSRAQConfig())
    block.session.objective = Overflowing(VSRAQConfig())
    block.reference()
    block.session.begin_tuning()
    block.forward([0])
    with pytest.raises(NonFiniteTuningError, match="total loss.*value_weight"):
        block.session.step_loss(torch.tensor(0.1), [0])


def test_refit_routes_the_tuned_block_closer_to_the_reference() -> None:
    """After tuning (here: the attention moved), the own router is re-fitted to
    the inputs the block now gives it; the fit is kept only where held-aside
    agreement rises, and the report says what happened."""
    from vsraq_modifier.refit import RefitOptions

    block = _Block(VSRAQConfig())
    block.session.refit = RefitOptions(method="ridge", holdout=0.25)
    gate = block.layer.mlp.gate
    before = gate.weight.detach().clone()
    block.reference()
    block.session.begin_tuning()
    with torch.no_grad():
        block.layer.self_attn.o_proj.weight.mul_(4.0)
    report = block.session.finish()
    result = block.session.refits[0]
    assert set(report.refit) == {"L0"}
    assert result.fit_error_after <= result.fit_error_before
    if result.accepted:
        assert result.agreement_after > result.agreement_before
        assert not torch.equal(gate.weight, before)
    else:
        assert torch.equal(gate.weight, before)
    assert gate.weight.dtype == before.dtype and gate.weight.shape == before.shape


def test_without_refit_the_router_is_untouched() -> None:
    block = _Block(VSRAQConfig(router_refit="none"))
    assert block.session.refit is None
    gate = block.layer.mlp.gate
    before = gate.weight.detach().clone()
    block.reference()
    block.session.begin_tuning()
    with torch.no_grad():
        block.layer.self_attn.o_proj.weight.mul_(4.0)
    report = block.session.finish()
    assert report.refit == {} and torch.equal(gate.weight, before)


def test_router_inputs_stop_the_block_before_its_experts() -> None:
    """The re-fit's pass over the calibration samples needs only the routers'
    inputs: each forward stops at the router (no expert runs), and the inputs are
    those a whole forward gives the router."""
    block = _Block(VSRAQConfig())
    block.reference()
    gate = block.layer.mlp.gate
    full: list[torch.Tensor] = []
    grab = gate.register_forward_pre_hook(
        lambda _m, args: full.append(args[0].reshape(-1, args[0].shape[-1]))
    )
    with torch.no_grad():
        for start in range(0, SAMPLES, 2):
            block.forward([start, start + 1])
    grab.remove()
    experts_ran: list[int] = []
    hook = block.layer.mlp.experts.register_forward_hook(
        lambda *_: experts_ran.append(1)
    )
    got = block.session._router_inputs(block.session.own)
    hook.remove()
    assert experts_ran == [] and set(got) == {0}
    assert torch.equal(got[0], torch.cat(full))
    assert got[0].shape == (SAMPLES * SEQ, gate.weight.shape[1])


def test_frozen_attention_lookahead_is_the_full_one_at_the_reference() -> None:
    """``lookahead_attention: reference``: the reference pass keeps layer 1's
    attention output per sample; a tuning step's look-ahead uses it, so at the
    reference it gives the full path's loss, and away from it the gradient no
    longer runs through layer 1's attention; the agreement passes run it whole."""
    blocks = {}
    for mode in ("full", "reference"):
        block = _Block(
            VSRAQConfig(
                best_iteration="total", lookahead_every=1, lookahead_attention=mode
            )
        )
        block.reference()
        block.session.begin_tuning()
        blocks[mode] = block
    full, frozen = blocks["full"].session, blocks["reference"].session
    assert not full.frozen_attention and frozen.frozen_attention
    hidden = blocks["full"].model.config.hidden_size
    assert frozen.ref.nbytes == full.ref.nbytes + SAMPLES * SEQ * hidden * 2
    assert frozen.before.exact_match() == full.before.exact_match() == {0: 1.0, 1: 1.0}
    values, grads = {}, {}
    for mode, block in blocks.items():
        attn = block.model.model.layers[1].self_attn
        for p in attn.parameters():
            p.requires_grad_(True)
        host = torch.tensor(0.5, requires_grad=True)
        block.forward([0, 1])
        values[mode] = float(block.session.step_loss(host, [0, 1]).detach())
        with torch.no_grad():
            block.layer.self_attn.o_proj.weight.mul_(3.0)
        block.forward([2, 3])
        block.session.step_loss(host, [2, 3]).backward()
        grads[mode] = attn.q_proj.weight.grad
        block.session.finish()
    assert values["reference"] == pytest.approx(values["full"], rel=1e-4)
    assert grads["full"] is not None and grads["full"].abs().sum() > 0
    assert grads["reference"] is None
