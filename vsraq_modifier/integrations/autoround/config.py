"""AutoRound-side config: SignRound's options plus the VSRAQ options.

Why a ``SignRoundConfig`` subclass whose class name contains "SignRound":
AutoRound 0.15.1 forwards keyword arguments given directly to ``AutoRound(...)``
(``iters``, ``lr``, ...) only to configs whose lower-cased class name contains
"signround"; any other name silently loses them. The VSRAQ options themselves are
validated by :class:`VSRAQConfig`, the one definition shared with the CLI and
llm-compressor; the host options that conflict with them by
:func:`~vsraq_modifier.integrations.autoround.host_options.check_host_options`,
once, here.

The quantizer that runs this config is registered by
``integrations/autoround/quantizer.py``; import the config through
``vsraq_modifier.integrations.autoround`` (which loads both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auto_round.algorithms.quantization.sign_round.config import SignRoundConfig
from auto_round.algorithms.registry import coerce_config_class
from pydantic import ValidationError

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.integrations.autoround.host_options import (
    HOST_OPTIONS,
    HostDecision,
    VSRAQOptionError,
    check_host_options,
)
from vsraq_modifier.integrations.autoround.seams import quantizer_for

__all__ = [
    "VSRAQ_FIELDS",
    "VSRAQOptionError",
    "VSRAQSignRoundConfig",
    "vsraq_config",
]

#: the VSRAQ option names (as in docs/objective.md), in declaration order
VSRAQ_FIELDS: tuple[str, ...] = tuple(VSRAQConfig.model_fields)


def _describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "options"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}={e.get('input')!r}: {msg}" if e["loc"] else msg)
    return "; ".join(parts)


def vsraq_config(
    base: VSRAQConfig | Mapping[str, Any] | None = None, **options: Any
) -> VSRAQConfig:
    """A validated :class:`VSRAQConfig` from a config, a mapping and/or keywords
    (keywords win; of a config only its explicitly set options are taken); raises
    :class:`VSRAQOptionError` naming the bad option."""
    values: dict[str, Any] = {}
    if isinstance(base, VSRAQConfig):
        values.update(base.user_options())
    elif base is not None:
        values.update(dict(base))
    values.update(options)
    try:
        return VSRAQConfig(**values)
    except ValidationError as e:
        raise VSRAQOptionError(
            f"invalid VSRAQ option(s): {_describe(e)}. See docs/autoround.md for "
            "the allowed values."
        ) from None


class VSRAQSignRoundConfig(SignRoundConfig):
    """SignRound tuning (AutoRound's default algorithm) with a routing-aware loss.

    Takes every :class:`SignRoundConfig` / scheme keyword (``iters``, ``lr``,
    ``bits``, ...) plus the VSRAQ options (``loss``, ``value_weight``,
    ``structure_weight``, ``margin``, ``value_target``, ``structure``,
    ``temperature``, ``lookahead``, ``lookahead_every``; defaults from
    :class:`VSRAQConfig`), either as keywords or as ``vsraq=VSRAQConfig(...)``.
    ``host_options``: AutoRound options given elsewhere (e.g. to ``AutoRound``)
    that the conflict rules need to see.

    Example::

        from auto_round import AutoRound
        from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig

        ar = AutoRound(model, tokenizer, scheme="W4A16",
                       alg_configs=VSRAQSignRoundConfig(iters=200, margin=0.1))
        ar.quantize_and_save("out")
    """

    def __init__(
        self,
        *,
        vsraq: VSRAQConfig | Mapping[str, Any] | None = None,
        host_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        options = {k: kwargs.pop(k) for k in VSRAQ_FIELDS if k in kwargs}
        self.vsraq = vsraq_config(vsraq, **options)
        user = {k: kwargs[k] for k in HOST_OPTIONS if k in kwargs}
        self.host_decision = check_host_options(
            self.vsraq, {**user, **(host_options or {})}
        )
        super().__init__(**kwargs)
        self._check_registered()

    def _check_registered(self) -> None:
        """Never a plain SignRound run labelled vsraq: AutoRound must run the
        VSRAQ quantizer for this config."""
        quantizer = quantizer_for(self)
        if not getattr(quantizer, "runs_vsraq", False):
            raise RuntimeError(
                f"AutoRound would run {quantizer.__name__} for "
                f"{type(self).__name__}, without the VSRAQ loss. Import the config "
                "from vsraq_modifier.integrations.autoround (which registers the "
                "VSRAQ quantizer); auto-round 0.15.x expected."
            )

    @classmethod
    def from_signround(
        cls,
        config: SignRoundConfig,
        vsraq: VSRAQConfig,
        decision: HostDecision,
    ) -> VSRAQSignRoundConfig:
        """The same SignRound settings with the VSRAQ options added (used by the
        CLI, which builds AutoRound's own SignRoundConfig first, after checking
        the host options: ``decision``)."""
        if type(config) is not SignRoundConfig:
            raise VSRAQOptionError(
                "--loss needs AutoRound's SignRound tuning, got "
                f"{type(config).__name__} (--enable_adam and --enable_alg_ext select "
                "other tuners; remove them)"
            )
        new = coerce_config_class(config, cls)
        new.vsraq = vsraq
        new.host_decision = decision
        new._check_registered()
        return new

    #: set by __init__ / from_signround
    vsraq: VSRAQConfig
    host_decision: HostDecision

    def __repr__(self) -> str:
        return f"VSRAQSignRoundConfig(iters={self.iters}, vsraq={self.vsraq!r})"
