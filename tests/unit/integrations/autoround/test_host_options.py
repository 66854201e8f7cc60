"""One policy for AutoRound options that conflict with VSRAQ: refuse what the user
set (naming the fix), switch off host defaults, never refuse an unset option."""

from __future__ import annotations

import pytest

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.integrations.autoround.host_options import (
    HostDecision,
    VSRAQOptionError,
    check_host_options,
    switch_off_messages,
)

VSRAQ, MSE = VSRAQConfig(), VSRAQConfig(loss="mse")


def test_nothing_set_is_never_refused() -> None:
    assert check_host_options(VSRAQ, {}) == HostDecision(True, True)
    assert check_host_options(MSE, {}) == HostDecision(True, False)
    allowed = dict(iters=10, nblocks=1, enable_adam=False, enable_torch_compile=False)
    assert check_host_options(VSRAQ, allowed).lfq_off


@pytest.mark.parametrize(
    ("config", "user", "message"),
    [
        (VSRAQ, {"iters": -1}, "iters=-1: must be >= 0.*silently run 200"),
        (VSRAQ, {"iters": 0}, "loss='vsraq' with iters=0: .*round-to-nearest"),
        (VSRAQ, {"nblocks": 2}, "nblocks=2: .*Remove nblocks"),
        (VSRAQ, {"enable_adam": True}, "enable_adam selects another AutoRound tuner"),
        (MSE, {"enable_alg_ext": True}, "enable_alg_ext selects another"),
        (MSE, {"enable_torch_compile": True}, "forward hooks.*Remove enable_torch_"),
        (VSRAQ, {"enable_lfq": True}, "enable_lfq with loss='vsraq': .*LM cross"),
    ],
)
def test_conflicts_the_user_set_are_refused(config, user, message) -> None:
    with pytest.raises(VSRAQOptionError, match=message):
        check_host_options(config, user)


def test_rtn_and_lfq_stay_possible_with_the_host_loss() -> None:
    assert check_host_options(MSE, {"iters": 0, "enable_lfq": True}) == HostDecision(
        True, False
    )


def test_flag_style_names_command_line_flags() -> None:
    with pytest.raises(VSRAQOptionError, match="^loss='vsraq' with --iters 0: "):
        check_host_options(VSRAQ, {"iters": 0}, flag_style=True)
    with pytest.raises(VSRAQOptionError, match="--nblocks 4: "):
        check_host_options(VSRAQ, {"nblocks": 4}, flag_style=True)
    with pytest.raises(TypeError, match="not host options: \\['lr'\\]"):
        check_host_options(VSRAQ, {"lr": 0.1})
    messages = switch_off_messages()
    assert set(messages) == {"torch_compile", "lfq"}
    assert all(m.startswith("vsraq: ") for m in messages.values())
