"""Make AutoRound find the VSRAQ quantizer.

AutoRound picks the implementation of a config by walking the config's MRO in its
pipeline-member registry; an unregistered ``SignRoundConfig`` subclass silently
falls back to plain ``SignRoundQuantizer``. Registration therefore happens when a
:class:`VSRAQSignRoundConfig` is built, and is verified, not assumed.
"""

from __future__ import annotations

__all__ = ["ensure_registered"]

_done = False


def ensure_registered() -> None:
    """Register ``VSRAQSignRoundConfig -> VSRAQQuantizer`` and the algorithm
    alias ``"vsraq"`` (``AutoRound(..., alg_configs="vsraq")``). Idempotent."""
    global _done
    if _done:
        return
    from auto_round.algorithms.registry import (
        register_algorithm,
        register_pipeline_member,
        resolve_pipeline_member,
    )

    from vsraq_modifier.integrations.autoround.config import VSRAQSignRoundConfig
    from vsraq_modifier.integrations.autoround.quantizer import VSRAQQuantizer

    register_pipeline_member(VSRAQSignRoundConfig)(VSRAQQuantizer)
    probe = object.__new__(VSRAQSignRoundConfig)  # no __init__: no recursion
    if resolve_pipeline_member(probe) is not VSRAQQuantizer:
        raise RuntimeError(
            "AutoRound's pipeline registry does not map VSRAQSignRoundConfig to "
            "VSRAQQuantizer; reinstall vsraq-modifier (auto-round 0.15.x expected)."
        )
    register_algorithm(
        "vsraq",
        aliases=("vsraq",),
        config_factory=VSRAQSignRoundConfig,
        summary="SignRound with the routing-aware VSRAQ loss for MoE models "
        "(vsraq-modifier).",
    )
    _done = True
