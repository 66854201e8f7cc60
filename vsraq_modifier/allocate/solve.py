"""The global allocation: one scheme per unit, least summed sensitivity, within a
budget of average bits per quantized weight.

An exact 0/1 integer programme (multiple-choice knapsack) solved by scipy's
``milp`` (HiGHS) with a zero optimality gap: variables x[u, s] in {0, 1},
sum_s x[u, s] = 1 per unit, sum cost[u, s] x[u, s] <= budget * weights,
minimise sum sensitivity[u, s] x[u, s]. HiGHS is deterministic for the same input;
equal optima are broken towards fewer bits, then towards the earlier unit, by
a tie-break term far below any sensitivity difference that can be stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Allocation", "BudgetError", "bounds", "solve"]


class BudgetError(ValueError):
    """The budget is outside what the candidate schemes can reach."""


@dataclass(frozen=True)
class Allocation:
    """``choice[u]``: index of the scheme unit ``u`` gets."""

    choice: tuple[int, ...]
    total_bits: int
    total_weights: int
    objective: float

    @property
    def average_bits(self) -> float:
        return self.total_bits / self.total_weights


def bounds(costs: np.ndarray, numel: np.ndarray) -> tuple[float, float]:
    """(cheapest, richest) average bits over all assignments."""
    total = float(numel.sum())
    return float(costs.min(axis=1).sum()) / total, float(
        costs.max(axis=1).sum()
    ) / total


def solve(
    sensitivity: np.ndarray, costs: np.ndarray, numel: np.ndarray, avg_bits: float
) -> Allocation:
    """Exact allocation. ``sensitivity``, ``costs`` (bits): [units, schemes];
    ``numel``: [units] weights per unit."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    sens = np.asarray(sensitivity, dtype=np.float64)
    cost = np.asarray(costs, dtype=np.int64)
    n = np.asarray(numel, dtype=np.int64)
    if sens.shape != cost.shape or sens.ndim != 2 or n.shape != (sens.shape[0],):
        raise ValueError(
            f"shapes: sensitivity {sens.shape}, costs {cost.shape}, numel {n.shape}"
        )
    if not np.isfinite(sens).all():
        raise ValueError("sensitivity has non-finite entries")
    lo, hi = bounds(cost, n)
    total = int(n.sum())
    if not lo - 1e-12 <= avg_bits <= hi + 1e-12:
        raise BudgetError(
            f"--avg-bits {avg_bits:g} is outside what the schemes reach on this model: "
            f"between {lo:.4f} (every unit at its cheapest scheme) and {hi:.4f} (every "
            "unit at its richest), scale and zero-point overhead counted"
        )
    units, schemes = sens.shape
    budget = int(np.floor(avg_bits * total + 1e-6))
    # tie-break: prefer fewer bits, then earlier units, by far less than any
    # stored sensitivity difference (float64 keeps ~15 digits)
    scale = max(float(np.abs(sens).max()), 1e-30)
    tie = (cost / max(float(cost.max()), 1.0)) * scale * 1e-9
    tie += np.arange(units)[:, None] * np.arange(schemes)[None, :] * scale * 1e-12
    c = (sens + tie).ravel()
    one_hot = np.zeros((units, units * schemes))
    for u in range(units):
        one_hot[u, u * schemes : (u + 1) * schemes] = 1
    # the budget row in units of average bits keeps HiGHS's tolerances meaningful
    row = cost.ravel() / total
    upper = budget / total
    for _ in range(4):  # HiGHS accepts rows within 1e-7; re-solve if that overshot
        res = milp(
            c,
            integrality=np.ones_like(c),
            bounds=Bounds(0, 1),
            constraints=[
                LinearConstraint(one_hot, 1, 1),
                LinearConstraint(row[None, :], -np.inf, upper),
            ],
            options={"mip_rel_gap": 0.0, "presolve": True},
        )
        if res.x is None:
            raise BudgetError(
                f"--avg-bits {avg_bits:g}: no assignment fits ({res.message}); "
                f"budgets from {lo:.4f} to {hi:.4f} are reachable"
            )
        x = np.rint(res.x).reshape(units, schemes).astype(int)
        choice = tuple(int(i) for i in x.argmax(axis=1))
        used = int(sum(cost[u, s] for u, s in enumerate(choice)))
        if used <= budget and (x.sum(axis=1) == 1).all():
            break
        upper -= (used - budget + 0.5) / total
    else:  # pragma: no cover - not seen
        raise RuntimeError("the MILP solution keeps violating its budget")
    objective = float(sum(sens[u, s] for u, s in enumerate(choice)))
    return Allocation(choice, used, total, objective)
