"""The VSRAQ routing objective and the baselines, in pure torch (docs/objective.md).

Per router: :class:`RouterPair` (quantized and reference logits, spec, padding mask);
:func:`routing_terms` gives the raw terms of ``config.loss``; :class:`BlockObjective`
normalises them per block and averages the routers of the block.
"""

from __future__ import annotations

from vsraq_modifier.objective.baselines import router_kl, topk_mse
from vsraq_modifier.objective.combine import BlockObjective, routing_terms, term_weights
from vsraq_modifier.objective.pair import (
    NonFiniteRoutingError,
    PreparedPair,
    RouterPair,
    prepare,
)
from vsraq_modifier.objective.sensitivity import (
    default_temperature,
    sensitivity_margin,
    sensitivity_weights,
)
from vsraq_modifier.objective.set_nll import log_esp, set_nll_term
from vsraq_modifier.objective.share import FlipCap, flip_cap_scale
from vsraq_modifier.objective.structure import structure_term
from vsraq_modifier.objective.value import value_term

__all__ = [
    "FlipCap",
    "flip_cap_scale",
    "RouterPair",
    "NonFiniteRoutingError",
    "PreparedPair",
    "prepare",
    "routing_terms",
    "term_weights",
    "BlockObjective",
    "sensitivity_margin",
    "sensitivity_weights",
    "default_temperature",
    "value_term",
    "structure_term",
    "set_nll_term",
    "log_esp",
    "topk_mse",
    "router_kl",
]
