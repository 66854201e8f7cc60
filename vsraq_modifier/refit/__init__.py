"""Router re-alignment: re-fit each full-precision router to the inputs it sees in
the quantized model, in closed form (docs/refit.md, docs/objective.md).

- :mod:`~vsraq_modifier.refit.fit`: one router's fit with the held-aside safeguard
  (what the block session calls per block);
- :mod:`~vsraq_modifier.refit.solve`: the weighted ridge solves and targets;
- :mod:`~vsraq_modifier.refit.margin`: the optional convex margin refinement;
- :mod:`~vsraq_modifier.refit.model`: routers re-fitted one by one through a whole
  model (``vsraq refit``);
- :mod:`~vsraq_modifier.refit.checkpoint`: a checkpoint rewritten with only its
  router tensors changed.
"""

from vsraq_modifier.refit.fit import (
    DEFAULT_ACCEPT_SE,
    DEFAULT_RIDGE,
    RefitOptions,
    RefitResult,
    RouterFit,
    apply_fit,
    boundary_weights,
    fit_router,
    jaccard,
    jaccard_per_token,
    refit_router,
    resolved_target,
    solve_device,
)

__all__ = [
    "DEFAULT_ACCEPT_SE",
    "DEFAULT_RIDGE",
    "apply_fit",
    "RefitOptions",
    "RefitResult",
    "RouterFit",
    "boundary_weights",
    "fit_router",
    "jaccard",
    "jaccard_per_token",
    "refit_router",
    "resolved_target",
    "solve_device",
]
