"""lookahead_every: the look-ahead runs on every n-th tuning step only;
lookahead_attention: its tuning steps run with the attention frozen at the
reference, its other passes whole."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.autoround import quantize, small_moe
from vsraq_modifier.lookahead import LookaheadPath

ITERS = 6


@pytest.fixture
def lookahead_calls(monkeypatch):
    """Look-ahead runs per BlockSession phase (tuning or measuring)."""
    calls: list[bool] = []
    original = LookaheadPath.__call__

    def counting(self, hidden, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(self, hidden, **kwargs)

    monkeypatch.setattr(LookaheadPath, "__call__", counting)
    return calls


def _run(every: int):
    # not_use_best_mse: keep the last iteration (on a random tiny model AutoRound's
    # best iteration is often the first, which would hide any difference)
    model = small_moe(seed=3)
    ar = quantize(
        "vsraq", model, iters=ITERS, lookahead_every=every, not_use_best_mse=True
    )
    block0 = model.model.layers[0]
    return ar, {n: p.detach().clone() for n, p in block0.state_dict().items()}


@pytest.mark.parametrize("every", [1, 2, 3])
def test_lookahead_runs_on_every_nth_step(every, lookahead_calls):
    ar, _ = _run(every)
    q = ar.alg_composer.block_quantizer
    assert q.vsraq.lookahead_every == every
    tuning = sum(lookahead_calls)  # the tuning forwards run with gradients
    no_grad = len(lookahead_calls) - tuning  # reference + the two agreement passes
    # 4 samples in batches of 2: one forward per step, 2 per no-grad pass
    assert tuning == len(range(0, ITERS, every))
    assert no_grad == 6
    # the agreement of the look-ahead router is still measured after tuning
    assert any("look-ahead" in k for k in q.reports[0].agreement_after)


def test_skipping_the_lookahead_changes_the_tuned_weights():
    _, every1 = _run(1)
    _, every2 = _run(2)
    _, again1 = _run(1)
    assert all(torch.equal(every1[k], again1[k]) for k in every1)  # deterministic
    assert any(not torch.equal(every1[k], every2[k]) for k in every1)


def test_tuning_steps_get_the_frozen_attention_and_the_weights_differ(monkeypatch):
    """Through AutoRound: with lookahead_attention=reference every tuning step's
    look-ahead gets the reference attention output of its samples, the reference
    pass records it and the agreement passes run the path whole; the tuned
    weights differ from lookahead_attention=full."""
    seen: list[tuple[bool, str]] = []
    original = LookaheadPath.__call__

    def spying(self, hidden, *, record_attention=None, attention=None, **kwargs):
        kind = "record" if record_attention is not None else "whole"
        if attention is not None:
            assert [a is not None for a in attention] == [True]  # one layer
            assert attention[0].shape == hidden.shape
            kind = "frozen"
        seen.append((torch.is_grad_enabled(), kind))
        return original(
            self,
            hidden,
            record_attention=record_attention,
            attention=attention,
            **kwargs,
        )

    monkeypatch.setattr(LookaheadPath, "__call__", spying)
    weights = {}
    for mode in ("full", "reference"):
        seen.clear()
        model = small_moe(seed=3)
        quantize(
            "vsraq",
            model,
            iters=ITERS,
            lookahead_every=1,
            lookahead_attention=mode,
            not_use_best_mse=True,
        )
        block0 = model.model.layers[0]
        weights[mode] = {n: p.detach().clone() for n, p in block0.state_dict().items()}
        first_block = seen[: ITERS + 6]  # reference (2), before (2), steps, after (2)
        tuning = [kind for grad, kind in first_block if grad]
        no_grad = [kind for grad, kind in first_block if not grad]
        if mode == "full":
            assert tuning == ["whole"] * ITERS and no_grad == ["whole"] * 6
        else:
            assert tuning == ["frozen"] * ITERS
            assert no_grad == ["record"] * 2 + ["whole"] * 4
    full, frozen = weights["full"], weights["reference"]
    assert any(not torch.equal(full[k], frozen[k]) for k in full)
