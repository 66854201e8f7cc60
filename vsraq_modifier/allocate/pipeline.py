"""``allocate()``: units, schemes and domains in, an :class:`AllocationRecord` out.

Everything that can be refused (schemes that do not tile, a budget outside the
reachable range, a model without MoE routers) is refused before the measurement,
whose cost is ``(1 + units x schemes) x chunks`` forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vsraq_modifier.allocate.domains import Domain, DomainError, domain_weights
from vsraq_modifier.allocate.outputs import AllocationRecord, unit_bits
from vsraq_modifier.allocate.schemes import Scheme, check_tiling
from vsraq_modifier.allocate.sensitivity import combine, measure
from vsraq_modifier.allocate.solve import BudgetError, bounds, solve
from vsraq_modifier.allocate.units import (
    Unit,
    UnitMode,
    find_units,
    ignore_patterns,
    ignored_linears,
    unit_widths,
)
from vsraq_modifier.routers.registry import adapter_for

__all__ = ["allocate", "cost_table", "domain_chunks", "plan"]


def domain_chunks(
    domains: Sequence[Domain], tokenizer: Any, seq_len: int, max_tokens: int
) -> tuple[dict[str, list[torch.Tensor]], dict[str, int]]:
    """Per domain: ``max_tokens // seq_len`` windows of ``seq_len`` token ids spread
    evenly over its text (all of it if shorter), and its total token count."""
    chunks, available = {}, {}
    for d in domains:
        ids = torch.tensor(
            tokenizer(d.text, add_special_tokens=False, verbose=False)["input_ids"],
            dtype=torch.long,
        )
        available[d.name] = int(ids.numel())
        n_win = ids.numel() // seq_len
        if n_win < 1:
            raise DomainError(
                f"--dataset {d.name}: {ids.numel()} tokens, fewer than one window of "
                f"--seq-len {seq_len}; give more text or a smaller --seq-len"
            )
        want = min(n_win, max(1, max_tokens // seq_len))
        starts = np.linspace(0, n_win - 1, want).round().astype(int)
        chunks[d.name] = [ids[s * seq_len : (s + 1) * seq_len] for s in starts]
    return chunks, available


def cost_table(units: Sequence[Unit], schemes: Sequence[Scheme]) -> np.ndarray:
    """Bits [units, schemes], overhead counted."""
    return np.array([[unit_bits(u, s) for s in schemes] for u in units], dtype=np.int64)


def plan(
    model: nn.Module, schemes: Sequence[Scheme], mode: UnitMode, avg_bits: float
) -> tuple[list[Unit], np.ndarray]:
    """Units and costs, after the checks that need no measurement."""
    units = find_units(model, mode)
    widths = unit_widths(units)
    for s in schemes:
        check_tiling(s, widths)
    costs = cost_table(units, schemes)
    numel = np.array([u.numel for u in units])
    lo, hi = bounds(costs, numel)
    if not lo - 1e-12 <= avg_bits <= hi + 1e-12:
        raise BudgetError(
            f"--avg-bits {avg_bits:g} is outside what the schemes reach on this model: "
            f"between {lo:.4f} (every unit at its cheapest scheme) and {hi:.4f} (every "
            "unit at its richest), scale and zero-point overhead counted"
        )
    return units, costs


def allocate(
    model: nn.Module,
    chunks: dict[str, list[torch.Tensor]],
    available: dict[str, int],
    *,
    schemes: Sequence[Scheme],
    avg_bits: float,
    mode: UnitMode = "layer",
    weights: str = "equal",
    routing_weight: float | None = None,
    progress: bool = True,
) -> AllocationRecord:
    """Measure, combine per domain, solve (module docstring)."""
    units, costs = plan(model, schemes, mode, avg_bits)
    names = list(chunks)
    w = domain_weights(weights, names, available)
    m = measure(model, units, schemes, chunks, progress=progress)
    sens, per_domain, alpha = combine(m, w, routing_weight)
    numel = np.array([u.numel for u in units])
    sol = solve(sens.numpy(), costs, numel, avg_bits)
    family = adapter_for(model).family
    return AllocationRecord(
        family=family,
        mode=mode,
        units=units,
        schemes=list(schemes),
        choice=list(sol.choice),
        budget=avg_bits,
        average_bits=sol.average_bits,
        bounds=bounds(costs, numel),
        domains=names,
        weights=w,
        routing_weight=alpha,
        per_domain=per_domain,
        kl=m.kl,
        disagreement=m.disagreement,
        usage=m.usage,
        router_layers=m.router_layers,
        tokens=m.tokens,
        forward_passes=m.forward_passes,
        seconds=m.seconds,
        ignore=ignore_patterns(family),
        kept_linears=ignored_linears(model),
    )
