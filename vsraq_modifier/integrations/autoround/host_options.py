"""AutoRound options that conflict with the VSRAQ objective: one rule set, one policy.

Policy: an option the user set that would bypass or silently drop the routing
objective is refused with an error naming the fix; an option the host turns on by
its own default (torch.compile in AutoRoundModifier, AutoRound on some devices) is
switched off with a log line. A setting the user did not make is never refused.

:func:`check_host_options` is called once per host run, where the run's VSRAQ
config is built (``VSRAQSignRoundConfig``), with the options as the user gave them
(AutoRound's config rewrites some, e.g. a negative ``iters`` becomes 200).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vsraq_modifier.config import VSRAQConfig

__all__ = ["HOST_OPTIONS", "HostDecision", "VSRAQOptionError", "check_host_options"]

#: the host options these rules read (AutoRound / AutoRoundModifier names)
HOST_OPTIONS: tuple[str, ...] = (
    "iters",
    "nblocks",
    "enable_adam",
    "enable_alg_ext",
    "enable_torch_compile",
    "enable_lfq",
)


class VSRAQOptionError(ValueError):
    """A VSRAQ option, or its combination with an AutoRound option, is invalid."""


@dataclass(frozen=True)
class HostDecision:
    """What the run must switch off in the host (with a log line each)."""

    torch_compile_off: bool
    lfq_off: bool


_COMPILE = (
    "the routing loss reads router logits with forward hooks, which a compiled "
    "block skips"
)
_LFQ = (
    "it replaces the last block's loss by an LM cross-entropy that would bypass "
    "the routing objective"
)


def check_host_options(
    vsraq: VSRAQConfig, user: Mapping[str, Any], *, flag_style: bool = False
) -> HostDecision:
    """Refuse host options the user set (``user``: name -> value as given) that
    conflict with ``vsraq``; returns what to switch off. ``flag_style``: name the
    options as auto-round command-line flags in the messages."""
    unknown = set(user) - set(HOST_OPTIONS)
    if unknown:
        raise TypeError(f"not host options: {sorted(unknown)}")

    def name(option: str, value: Any = None) -> str:
        if value is None:
            return f"--{option}" if flag_style else option
        return f"--{option} {value}" if flag_style else f"{option}={value}"

    routing = vsraq.is_routing_loss
    iters = user.get("iters")
    if iters is not None and int(iters) < 0:
        # SignRoundConfig would reset a negative value to 200 with a warning
        raise VSRAQOptionError(
            f"{name('iters', iters)}: must be >= 0 (e.g. 200); AutoRound would "
            "silently run 200 iterations instead"
        )
    if routing and iters == 0:
        raise VSRAQOptionError(
            f"loss={vsraq.loss!r} with {name('iters', 0)}: iters 0 is AutoRound's "
            "round-to-nearest, which has no loss to add a routing term to. Use "
            "iters > 0 (e.g. 200), or drop the routing loss for RTN."
        )
    nblocks = user.get("nblocks")
    if nblocks is not None and int(nblocks) != 1:
        raise VSRAQOptionError(
            f"{name('nblocks', nblocks)}: AutoRound 0.15.1 ignores nblocks from "
            "the algorithm config (it tunes one block at a time anyway). Remove "
            "nblocks; the look-ahead term already links a block to the next router."
        )
    for flag in ("enable_adam", "enable_alg_ext"):
        if user.get(flag):
            raise VSRAQOptionError(
                f"{name(flag)} selects another AutoRound tuner that the VSRAQ "
                f"quantizer does not implement. Remove {name(flag)}."
            )
    for flag, why in (("enable_torch_compile", _COMPILE), ("enable_lfq", _LFQ)):
        # the quantizer taps the block on every loss (agreement log); the LM
        # loss of enable_lfq only bypasses a routing loss
        if user.get(flag) and (routing or flag == "enable_torch_compile"):
            raise VSRAQOptionError(
                f"{name(flag)} with loss={vsraq.loss!r}: {why}. Remove "
                f"{name(flag)} (a VSRAQ run switches it off)."
            )
    return HostDecision(torch_compile_off=True, lfq_off=routing)


def switch_off_messages() -> dict[str, str]:
    """The log lines of :class:`HostDecision`'s switch-offs."""
    return {
        "torch_compile": f"vsraq: torch.compile switched off: {_COMPILE}",
        "lfq": f"vsraq: enable_lfq switched off: {_LFQ}",
    }
