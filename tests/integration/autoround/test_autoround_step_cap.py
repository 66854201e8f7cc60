"""max_flip_share through AutoRound: at each block's first step the routing terms
are scaled until they overturn at most that share of the host's SignSGD signs,
the factor is in the block's report and log line, and 1 switches it off."""

from __future__ import annotations

from tests.helpers.autoround import quantize, small_moe

ITERS = 4


def test_cap_scales_the_routing_terms_to_the_share() -> None:
    ar = quantize("vsraq", small_moe(seed=3), iters=ITERS, max_flip_share=0.01)
    reports = ar.alg_composer.block_quantizer.reports
    assert reports and all(r.cap is not None for r in reports)
    for r in reports:
        scale, before, after = r.cap
        assert 0.0 < scale <= 1.0 and after <= 0.01 + 1e-9 and after <= before
        assert "host signs overturned" in r.line()
    # the tiny model's routing terms outvote the host on more than 1 %
    assert any(r.cap[0] < 1.0 and r.cap[1] > 0.01 for r in reports)


def test_share_one_is_no_cap() -> None:
    ar = quantize("vsraq", small_moe(seed=3), iters=ITERS, max_flip_share=1.0)
    for r in ar.alg_composer.block_quantizer.reports:
        assert r.cap is not None and r.cap[0] == 1.0 and r.cap[1] == r.cap[2]
