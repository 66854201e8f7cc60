"""The AutoRound-side config: VSRAQ options split from SignRound's, validated by
VSRAQConfig with one readable error, host-option rules applied once, and the
registry check that AutoRound runs the VSRAQ quantizer for it."""

from __future__ import annotations

import pytest
from auto_round.algorithms.quantization.sign_round.config import SignRoundConfig

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig
from vsraq_modifier.integrations.autoround.config import (
    VSRAQ_FIELDS,
    VSRAQOptionError,
    vsraq_config,
)
from vsraq_modifier.integrations.autoround.host_options import HostDecision


def test_fields_are_vsraq_configs() -> None:
    assert VSRAQ_FIELDS == tuple(VSRAQConfig.model_fields)
    assert VSRAQ_FIELDS[0] == "loss"


def test_vsraq_config_merges_config_mapping_and_keywords() -> None:
    base = VSRAQConfig(margin=0.2, lookahead=False)
    merged = vsraq_config(base, margin=0.3)
    assert (merged.margin, merged.lookahead) == (0.3, False)
    assert merged.user_options() == {"margin": 0.3, "lookahead": False}
    assert vsraq_config({"loss": "topk_mse"}).loss == "topk_mse"
    assert vsraq_config() == VSRAQConfig()


def test_a_bad_option_is_one_line_naming_it() -> None:
    with pytest.raises(VSRAQOptionError) as info:
        vsraq_config(margin=-1.0, lookahead_every=0)
    msg = str(info.value)
    assert msg.startswith("invalid VSRAQ option(s): margin=-1.0: ")
    assert "lookahead_every=0" in msg and "docs/autoround.md" in msg
    assert "\n" not in msg
    with pytest.raises(VSRAQOptionError, match="margin has no effect with loss='mse'"):
        vsraq_config(loss="mse", margin=0.1)


def test_signround_keywords_stay_signround_s() -> None:
    config = VSRAQSignRoundConfig(iters=7, lr=0.01, margin=0.1, loss="vsraq")
    assert config.iters == 7 and config.vsraq.margin == 0.1
    assert config.host_decision == HostDecision(True, True)
    assert "vsraq=" in repr(config) and "iters=7" in repr(config)
    assert isinstance(config, SignRoundConfig)
    with pytest.raises(VSRAQOptionError, match="iters=0"):
        VSRAQSignRoundConfig(iters=0)
    with pytest.raises(VSRAQOptionError, match="enable_torch_compile"):
        VSRAQSignRoundConfig(host_options={"enable_torch_compile": True})


def test_from_signround_keeps_the_settings_and_refuses_other_tuners() -> None:
    plain = SignRoundConfig(iters=5)
    decision = HostDecision(True, True)
    new = VSRAQSignRoundConfig.from_signround(plain, VSRAQConfig(), decision)
    assert isinstance(new, VSRAQSignRoundConfig) and new.iters == 5
    assert new.vsraq == VSRAQConfig() and new.host_decision is decision

    class OtherTuner(SignRoundConfig):
        pass

    with pytest.raises(VSRAQOptionError, match="got OtherTuner"):
        VSRAQSignRoundConfig.from_signround(OtherTuner(), VSRAQConfig(), decision)
