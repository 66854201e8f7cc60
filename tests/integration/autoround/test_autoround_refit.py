"""Router re-fit inside AutoRound's block loop (BlockSession.refit_routers): on by
default with a routing loss (router_refit='auto'), off by default with loss=mse
(AutoRound's own bytes), on with router_refit='ridge' for any loss and off with
'none'; the next block tuned with the re-fitted router in place."""

from __future__ import annotations

import torch

from tests.helpers.autoround import RUN, calib_ids, small_moe, tiny_tokenizer
from vsraq_modifier.integrations.autoround import autoround


def _run(**options):
    model = small_moe()
    gates = [layer.mlp.gate.weight.detach().clone() for layer in model.model.layers]
    ar = autoround(
        model,
        tiny_tokenizer(),
        dataset=calib_ids(8),
        iters=3,
        amp=False,  # the router keeps its float32 weights unless re-fitted
        **{**RUN, "nsamples": 8},
        **options,
    )
    ar.quantize()
    q = ar.alg_composer.block_quantizer
    return model, gates, q.reports


def test_routing_loss_refits_routers_by_default():
    model, gates, reports = _run(loss="vsraq")
    assert [r.layer for r in reports] == [0, 1]
    for r in reports:
        (label,) = r.refit  # the block's own router
        assert label == f"L{r.layer}" and "held-aside Jaccard" in r.refit[label]
        kept = "re-fitted" in r.refit[label]
        same = torch.equal(model.model.layers[r.layer].mlp.gate.weight, gates[r.layer])
        assert kept != same  # a kept fit changed the router, a refused one did not
        assert "router re-fit L" in r.line()


def test_routers_are_left_alone_with_mse_or_when_switched_off():
    _, _, vsraq = _run(loss="vsraq", router_refit="none")
    assert all(r.refit == {} for r in vsraq)
    model, gates, reports = _run(loss="mse")
    assert all(r.refit == {} for r in reports)
    for layer, before in zip(model.model.layers, gates):
        assert torch.equal(layer.mlp.gate.weight, before)
    _, _, asked = _run(loss="mse", router_refit="ridge")
    assert all(set(r.refit) == {f"L{r.layer}"} for r in asked)
