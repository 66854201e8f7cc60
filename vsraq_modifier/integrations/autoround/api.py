"""Python API: an ``AutoRound`` run with the VSRAQ loss, every option checked.

``AutoRound(**kwargs)`` drops keywords it does not know with only a warning, and
``AutoRound(..., iters=0)`` silently replaces any SignRound config by RTN. This
helper sorts the keywords itself (VSRAQ options and tuning options into the
config, the rest to ``AutoRound``) and refuses anything it cannot place.
"""

from __future__ import annotations

from typing import Any

from auto_round import AutoRound

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.entry_checks import check_api_inputs
from vsraq_modifier.integrations.autoround.config import VSRAQ_FIELDS
from vsraq_modifier.integrations.autoround.quantizer import VSRAQSignRoundConfig
from vsraq_modifier.integrations.autoround.saving import stage_saves
from vsraq_modifier.integrations.autoround.seams import autoround_keywords

__all__ = ["autoround"]


def autoround(
    model: Any,
    tokenizer: Any = None,
    *,
    vsraq: VSRAQConfig | None = None,
    staged: bool = True,
    **kwargs: Any,
) -> Any:
    """Build an AutoRound compressor that tunes with the VSRAQ loss.

    ``kwargs`` may hold the VSRAQ options (``loss``, ``value_weight``,
    ``structure_weight``, ``margin``, ``value_target``, ``structure``,
    ``temperature``, ``lookahead``; defaults from :class:`VSRAQConfig`), SignRound
    options (``iters``, ``lr``, ``gradient_accumulate_steps``, ...), scheme fields
    (``bits``, ``group_size``, ...) and any ``AutoRound`` argument (``scheme``,
    ``dataset``, ``nsamples``, ``seqlen``, ``batch_size``, ``device_map``, ...).
    Unknown keywords raise ``TypeError``. With ``staged`` (default) the
    compressor's ``quantize_and_save``
    writes the checkpoint into a staging directory and renames it into place when
    complete; an existing non-empty export directory is refused before tuning
    unless ``overwrite=True`` is passed to it (``integrations/autoround/saving.py``).

    Example::

        ar = autoround(model, tokenizer, scheme="W4A16", iters=200, margin=0.1)
        ar.quantize_and_save("out", format="auto_round")
    """
    for bad in ("alg_configs", "algorithm"):
        if bad in kwargs:
            raise TypeError(f"autoround() builds alg_configs itself; remove {bad}=")
    tuning_keys, entry_keys = autoround_keywords()
    options = {k: kwargs.pop(k) for k in VSRAQ_FIELDS if k in kwargs}
    tuning = {k: kwargs.pop(k) for k in list(kwargs) if k in tuning_keys}
    unknown = sorted(set(kwargs) - entry_keys)
    if unknown:
        raise TypeError(
            f"autoround() got unknown keyword(s) {unknown}; AutoRound would drop them "
            f"with only a warning. VSRAQ options: {list(VSRAQ_FIELDS)}."
        )
    given = {
        k: kwargs[k] for k in ("enable_torch_compile", "enable_lfq") if k in kwargs
    }
    config = VSRAQSignRoundConfig(vsraq=vsraq, host_options=given, **options, **tuning)
    kwargs["enable_torch_compile"] = False  # refused above when the user set it
    check_api_inputs(model, tokenizer, kwargs)  # paths, token ids: before loading
    # quantize_and_save: the checkpoint appears complete or not at all
    compressor = AutoRound(model, tokenizer, alg_configs=config, **kwargs)
    return stage_saves(compressor) if staged else compressor
