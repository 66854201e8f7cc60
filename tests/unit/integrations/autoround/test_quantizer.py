"""The VSRAQ quantizer's own logic, without a run: AutoRound resolves the config
to it, its construction follows the loss and the host decision, and between blocks
the step loss is the host's unchanged (runs: tests/integration/autoround)."""

from __future__ import annotations

import torch

from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig
from vsraq_modifier.integrations.autoround.quantizer import (
    VSRAQQuantizer,
    ensure_registered,
)
from vsraq_modifier.integrations.autoround.seams import quantizer_for
from vsraq_modifier.objective import BlockObjective


def test_autoround_runs_it_for_the_config() -> None:
    ensure_registered()
    assert quantizer_for(VSRAQSignRoundConfig(iters=2)) is VSRAQQuantizer
    assert VSRAQQuantizer.runs_vsraq


def test_construction_follows_the_loss() -> None:
    vsraq = VSRAQQuantizer(VSRAQSignRoundConfig(iters=2))
    assert isinstance(vsraq.objective, BlockObjective)
    assert vsraq.session is None and vsraq.reports == []
    assert not vsraq.can_compile_block_forward()
    mse = VSRAQQuantizer(VSRAQSignRoundConfig(iters=2, loss="mse"))
    assert mse.objective is None and mse.vsraq.loss == "mse"


def test_lfq_is_switched_off_for_a_routing_loss_only() -> None:
    assert VSRAQSignRoundConfig(iters=2).host_decision.lfq_off is True
    assert VSRAQSignRoundConfig(iters=2, loss="mse").host_decision.lfq_off is False
    assert not VSRAQQuantizer(VSRAQSignRoundConfig(iters=2)).enable_lfq


def test_without_a_session_the_host_loss_passes_unchanged() -> None:
    quantizer = VSRAQQuantizer(VSRAQSignRoundConfig(iters=2))
    host = torch.tensor(0.5, requires_grad=True)
    assert quantizer.vsraq_step_loss(host, [0, 1], None) is host
