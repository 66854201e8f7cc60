"""AutoRound-side config: SignRound's options plus the VSRAQ options.

Why a ``SignRoundConfig`` subclass whose class name contains "SignRound":
AutoRound 0.15.1 forwards keyword arguments given directly to ``AutoRound(...)``
(``iters``, ``lr``, ...) only to configs whose lower-cased class name contains
"signround" (``autoround._config_fields``); any other name silently loses them.
The VSRAQ options themselves are validated by :class:`VSRAQConfig`, the one
definition shared with the CLI and llm-compressor, so defaults are the same
everywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from auto_round.algorithms.quantization.sign_round.config import SignRoundConfig
from pydantic import ValidationError

from vsraq_modifier.config import VSRAQConfig

__all__ = [
    "VSRAQ_FIELDS",
    "VSRAQOptionError",
    "VSRAQSignRoundConfig",
    "vsraq_config",
]

#: the VSRAQ option names (as in docs/objective.md), in declaration order
VSRAQ_FIELDS: tuple[str, ...] = tuple(VSRAQConfig.model_fields)


class VSRAQOptionError(ValueError):
    """A VSRAQ option, or its combination with an AutoRound option, is invalid."""


def _describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "options"
        parts.append(f"{where}={e.get('input')!r}: {e['msg']}")
    return "; ".join(parts)


def vsraq_config(
    base: VSRAQConfig | Mapping[str, Any] | None = None, **options: Any
) -> VSRAQConfig:
    """A validated :class:`VSRAQConfig` from a config, a mapping and/or keywords
    (keywords win); raises :class:`VSRAQOptionError` naming the bad option."""
    values: dict[str, Any] = {}
    if isinstance(base, VSRAQConfig):
        values.update(base.model_dump())
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
    ``temperature``, ``lookahead``; defaults from :class:`VSRAQConfig`), either
    as keywords or as ``vsraq=VSRAQConfig(...)``.

    Example::

        from auto_round import AutoRound
        from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig

        ar = AutoRound(model, tokenizer, scheme="W4A16",
                       alg_configs=VSRAQSignRoundConfig(iters=200, margin=0.1))
        ar.quantize_and_save("out")
    """

    def __init__(
        self, *, vsraq: VSRAQConfig | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        options = {k: kwargs.pop(k) for k in VSRAQ_FIELDS if k in kwargs}
        iters = kwargs.get("iters")
        if iters is not None and iters < 0:
            # SignRoundConfig would silently reset a negative value to 200
            raise VSRAQOptionError(f"iters={iters}: must be >= 0")
        super().__init__(**kwargs)
        self.vsraq = vsraq_config(vsraq, **options)
        self.check_vsraq()
        from vsraq_modifier.integrations.autoround.register import ensure_registered

        ensure_registered()

    @classmethod
    def from_signround(
        cls, config: SignRoundConfig, vsraq: VSRAQConfig | Mapping[str, Any] | None
    ) -> VSRAQSignRoundConfig:
        """The same SignRound settings with the VSRAQ options added (used by the
        CLI, which builds AutoRound's own SignRoundConfig first)."""
        if type(config) is not SignRoundConfig:
            raise VSRAQOptionError(
                "--loss needs AutoRound's SignRound tuning, got "
                f"{type(config).__name__} (--enable_adam and --enable_alg_ext select "
                "other tuners; remove them)"
            )
        new = copy.copy(config)
        if getattr(config, "scheme", None) is not None:
            new.scheme = config.scheme.copy()
        if hasattr(config, "_user_set_scheme_fields"):
            new._user_set_scheme_fields = set(config._user_set_scheme_fields)
        new.__class__ = cls
        new.vsraq = vsraq_config(vsraq)
        new.check_vsraq()
        from vsraq_modifier.integrations.autoround.register import ensure_registered

        ensure_registered()
        return new

    def check_vsraq(self) -> None:
        """Refuse AutoRound settings that would bypass or silently drop the
        routing objective (never a plain run labelled vsraq)."""
        routing = self.vsraq.is_routing_loss
        if routing and self.iters == 0:
            raise VSRAQOptionError(
                f"loss={self.vsraq.loss!r} with iters=0: AutoRound's iters=0 is "
                "round-to-nearest, which has no loss to add a routing term to. Use "
                "iters > 0 (e.g. 200), or drop the routing loss for RTN."
            )
        if getattr(self, "nblocks", 1) != 1:
            raise VSRAQOptionError(
                f"nblocks={self.nblocks}: AutoRound 0.15.1 ignores nblocks from the "
                "algorithm config (it tunes one block at a time anyway). Remove "
                "nblocks; the look-ahead term already links a block to the next router."
            )
        for flag in ("enable_adam", "enable_alg_ext"):
            if getattr(self, flag, False):
                raise VSRAQOptionError(
                    f"{flag}=True selects another AutoRound tuner that the VSRAQ "
                    f"quantizer does not implement. Remove {flag} (or --{flag})."
                )

    def check_configs(self) -> None:
        super().check_configs()
        self.check_vsraq()

    def __repr__(self) -> str:
        return f"VSRAQSignRoundConfig(iters={self.iters}, vsraq={self.vsraq!r})"
