"""``autoround()`` sorts its keywords itself: VSRAQ and tuning options into the
config, the rest to AutoRound, anything else refused; torch.compile off; saves
staged (built, not run: the runs are in tests/integration/autoround)."""

from __future__ import annotations

import pytest

from tests.helpers.autoround import RUN, calib_ids, small_moe, tiny_tokenizer
from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig, autoround
from vsraq_modifier.integrations.autoround.seams import is_save_patched


def _build(**kwargs):
    return autoround(
        small_moe(), tiny_tokenizer(), dataset=calib_ids(4), **{**RUN, **kwargs}
    )


def test_options_land_in_the_config_and_saves_are_staged() -> None:
    ar = _build(iters=3, margin=0.1, lookahead=False)
    config = ar.quantize_config
    assert isinstance(config, VSRAQSignRoundConfig)
    assert config.iters == 3 and config.vsraq.margin == 0.1
    assert not config.vsraq.lookahead and ar.enable_torch_compile is False
    assert is_save_patched(ar)
    assert not is_save_patched(_build(iters=3, staged=False))


def test_unknown_and_reserved_keywords_are_refused() -> None:
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['vsraq_margin'\]"):
        _build(vsraq_margin=0.1)
    for reserved in ("alg_configs", "algorithm"):
        with pytest.raises(TypeError, match=f"remove {reserved}="):
            _build(**{reserved: "signround"})


def test_host_conflicts_are_checked_with_the_vsraq_options() -> None:
    with pytest.raises(ValueError, match="enable_torch_compile with loss='vsraq'"):
        _build(enable_torch_compile=True)
    with pytest.raises(ValueError, match="iters=0"):
        _build(iters=0)
