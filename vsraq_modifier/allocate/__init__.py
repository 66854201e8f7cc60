"""``vsraq allocate``: routing-aware global mixed precision (GEMQ) with importance
balanced across calibration domains (MODE). See docs/allocate.md.

Modules: ``schemes`` (candidates, bit counting), ``units`` (what gets one scheme),
``domains`` (named calibration sets), ``sensitivity`` (RTN damage per unit and
scheme), ``solve`` (exact MILP), ``outputs`` (recipe.yaml, layer_config.json,
allocation.json/png), ``pipeline`` (all of it).
"""

from vsraq_modifier.allocate.pipeline import allocate, domain_chunks, plan

__all__ = ["allocate", "domain_chunks", "plan"]
