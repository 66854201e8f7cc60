"""The exact allocation: optimal against brute force, deterministic, bounded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vsraq_modifier.allocate.solve import BudgetError, bounds, solve


def _brute(sens, cost, budget):
    best = None
    for choice in itertools.product(range(sens.shape[1]), repeat=sens.shape[0]):
        c = sum(cost[u, s] for u, s in enumerate(choice))
        if c <= budget:
            v = sum(sens[u, s] for u, s in enumerate(choice))
            best = v if best is None else min(best, v)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_optimal_on_small_cases(seed):
    rng = np.random.default_rng(seed)
    units, schemes = int(rng.integers(1, 6)), int(rng.integers(2, 4))
    numel = rng.integers(1, 50, size=units) * 64
    bits = np.sort(rng.choice([2, 3, 4, 8], size=schemes, replace=False))
    cost = numel[:, None] * bits[None, :] + rng.integers(0, 200, size=(units, 1))
    sens = rng.random((units, schemes)) * (10.0 / bits)[None, :]
    lo, hi = bounds(cost, numel)
    for b in np.linspace(lo, hi, 5):
        sol = solve(sens, cost, numel, float(b))
        budget = int(np.floor(b * numel.sum() + 1e-6))
        assert sol.total_bits <= budget
        assert sol.objective == pytest.approx(
            _brute(sens, cost, budget), rel=1e-9, abs=1e-12
        )


def test_deterministic_and_ties_go_to_fewer_bits():
    sens = np.array([[1.0, 1.0], [2.0, 1.0]])  # unit 0: both schemes equal damage
    cost = np.array([[2, 4], [2, 4]])
    numel = np.array([1, 1])
    a = solve(sens, cost, numel, 4.0)
    assert a == solve(sens, cost, numel, 4.0)
    assert a.choice == (0, 1)  # unit 0 takes the cheaper of its equal options


def test_budget_outside_the_reachable_range_names_both_bounds():
    sens = np.ones((2, 2))
    cost = np.array([[200, 400], [200, 400]])
    numel = np.array([100, 100])
    for b in (1.5, 4.5):
        with pytest.raises(BudgetError) as e:
            solve(sens, cost, numel, b)
        assert "2.0000" in str(e.value) and "4.0000" in str(e.value)
    assert solve(sens, cost, numel, 2.0).choice == (0, 0)
    assert solve(sens, cost, numel, 4.0).average_bits <= 4.0
