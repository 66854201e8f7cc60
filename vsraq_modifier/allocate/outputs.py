"""What ``vsraq allocate`` writes: one allocation, in each host's own input.

- ``recipe.yaml``: an llm-compressor recipe, one ``config_groups`` entry per scheme
  with the regex targets of its units (``re:`` + ``re.match`` on module names).
- ``layer_config.json``: AutoRound's ``layer_config=`` (regex keys, searched in the
  module names; the linears kept in full precision are listed with 16 bits, since
  AutoRound quantizes every linear its default scheme reaches).
- ``allocation.json``, ``allocation.png``: the decision and what it was based on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vsraq_modifier.allocate.schemes import Scheme, matrix_bits
from vsraq_modifier.allocate.units import Unit

__all__ = [
    "MODIFIERS",
    "AllocationRecord",
    "autoround_pattern",
    "format_table",
    "layer_config",
    "recipe",
    "serving_notes",
    "unit_bits",
    "write_outputs",
]

#: --modifier choices -> the options the recipe gives them besides the schemes
MODIFIERS: dict[str, dict[str, Any]] = {
    "VSRAQModifier": {"iters": 200, "enable_torch_compile": False, "loss": "vsraq"},
    "AutoRoundModifier": {"iters": 200, "enable_torch_compile": False},
    "GPTQModifier": {},
    "QuantizationModifier": {},
}


def unit_bits(unit: Unit, scheme: Scheme) -> int:
    """Storage bits of a unit at a scheme (AutoScheme's count, per matrix)."""
    return sum(matrix_bits(scheme, p.in_features, p.out_features) for p in unit.parts)


@dataclass
class AllocationRecord:
    """Everything the files are written from (``choice[u]`` indexes ``schemes``)."""

    family: str
    mode: str
    units: Sequence[Unit]
    schemes: Sequence[Scheme]
    choice: Sequence[int]
    budget: float
    average_bits: float
    bounds: tuple[float, float]
    domains: list[str]
    weights: dict[str, float]
    routing_weight: float
    per_domain: Any  # [D, U, S] sensitivity per domain
    kl: Any  # [D, U, S]
    disagreement: Any  # [D, U, S]
    usage: dict[str, Any]  # domain -> [MoE layers, experts]
    router_layers: list[int]
    tokens: dict[str, int]
    forward_passes: int
    seconds: float
    ignore: Sequence[str]
    kept_linears: Sequence[str]


def _by_scheme(rec: AllocationRecord) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for unit, c in zip(rec.units, rec.choice):
        groups.setdefault(rec.schemes[c].label, []).extend(unit.patterns)
    return groups


def recipe(rec: AllocationRecord, modifier: str = "VSRAQModifier") -> dict[str, Any]:
    """The llm-compressor recipe as a dict (written as YAML)."""
    if modifier not in MODIFIERS:
        raise ValueError(f"--modifier {modifier!r}: use one of {', '.join(MODIFIERS)}")
    by_label = {s.label: s for s in rec.schemes}
    groups = {}
    for i, (label, patterns) in enumerate(sorted(_by_scheme(rec).items())):
        groups[f"group_{i}"] = {
            "targets": [f"re:{p}" for p in patterns],
            "weights": by_label[label].compressed_tensors(),
        }
    args = {"config_groups": groups, "ignore": list(rec.ignore), **MODIFIERS[modifier]}
    return {"quant_stage": {"quant_modifiers": {modifier: args}}}


def autoround_pattern(pattern: str) -> str:
    """A unit's pattern as AutoRound spells regex keys: its ``to_standard_regex``
    escapes every bare dot itself (an escaped one would match a backslash)."""
    return pattern.replace(r"\.", ".")


def layer_config(rec: AllocationRecord) -> dict[str, dict[str, Any]]:
    """AutoRound's ``layer_config`` (JSON-serialisable)."""
    out: dict[str, dict[str, Any]] = {}
    for unit, c in zip(rec.units, rec.choice):
        for p in unit.patterns:
            out[autoround_pattern(p)] = rec.schemes[c].autoround()
    for name in rec.kept_linears:
        out[f"^{name}$"] = {"bits": 16, "act_bits": 16, "data_type": "float"}
    return out


def serving_notes(rec: AllocationRecord) -> list[str]:
    """What vLLM needs to serve this allocation, and which compressed-tensors
    exports of it transformers 5.17 reloads (the rules in docs/allocate.md)."""
    notes = []
    if rec.mode == "expert":
        notes.append(
            "per-expert schemes: not servable by vLLM's fused MoE (one scheme per MoE "
            "layer); load with the project's tools or re-run with --unit layer"
        )
    for unit, c in zip(rec.units, rec.choice):
        bits = rec.schemes[c].bits
        if unit.kind in ("experts", "expert") and bits == 2:
            notes.append(
                f"{unit.name}: int2 experts need vLLM's optional int2 MoE kernel"
            )
        elif unit.kind in ("experts", "expert") and bits not in (4, 8):
            notes.append(f"{unit.name}: int{bits} MoE is not in released vLLM")
    experts = {
        rec.schemes[c].label
        for unit, c in zip(rec.units, rec.choice)
        if unit.kind in ("experts", "expert")
    }
    if len(experts) > 1:
        # transformers 5.17, quantizers/quantizer_compressed_tensors.py
        # (update_weight_conversions -> get_experts_scheme): one config group
        # decompresses the experts of every MoE layer
        notes.append(
            "the experts have more than one scheme: transformers 5.17 does not "
            "reload a compressed-tensors checkpoint of this allocation (it reads "
            "all experts with one scheme), vLLM reads each MoE layer's own; "
            "reload AutoRound's fake export in transformers"
        )
    elif len({rec.schemes[c].label for c in rec.choice}) > 1:
        # get_experts_scheme again: with no ``re:`` target naming the experts
        # (AutoRound's export lists module names) it takes the first group
        notes.append(
            "AutoRound's llm_compressor export may not reload in transformers "
            "5.17 (transformers reads all experts with the export's first config "
            "group, which need not be the experts'); llm-compressor's recipe "
            "export and AutoRound's fake export do"
        )
    return notes


def _usage(rec: AllocationRecord, unit: Unit) -> dict[str, Any] | None:
    if unit.kind not in ("experts", "expert") or unit.layer not in rec.router_layers:
        return None
    j = rec.router_layers.index(unit.layer)
    out = {}
    for d in rec.domains:
        row = [round(float(v), 6) for v in rec.usage[d][j]]
        out[d] = row if unit.expert is None else row[unit.expert]
    return out


def allocation_json(rec: AllocationRecord) -> dict[str, Any]:
    units = []
    for u, (unit, c) in enumerate(zip(rec.units, rec.choice)):
        scheme = rec.schemes[c]
        per = {d: float(rec.per_domain[i, u, c]) for i, d in enumerate(rec.domains)}
        units.append(
            {
                "name": unit.name,
                "layer": unit.layer,
                "kind": unit.kind,
                "expert": unit.expert,
                "weights": unit.numel,
                "scheme": scheme.label,
                "bits": unit_bits(unit, scheme) / unit.numel,
                "sensitivity": per,
                "kl": {d: float(rec.kl[i, u, c]) for i, d in enumerate(rec.domains)},
                "disagreement": {
                    d: float(rec.disagreement[i, u, c])
                    for i, d in enumerate(rec.domains)
                },
                "sensitivity_by_scheme": {
                    s.label: {
                        d: float(rec.per_domain[i, u, k])
                        for i, d in enumerate(rec.domains)
                    }
                    for k, s in enumerate(rec.schemes)
                },
                "usage": _usage(rec, unit),
                "patterns": list(unit.patterns),
            }
        )
    return {
        "average_bits": rec.average_bits,
        "budget": rec.budget,
        "domains": rec.domains,
        "units": units,
        "family": rec.family,
        "unit_mode": rec.mode,
        "schemes": [s.label for s in rec.schemes],
        "bounds": list(rec.bounds),
        "domain_weights": rec.weights,
        "routing_weight": rec.routing_weight,
        "tokens": rec.tokens,
        "forward_passes": rec.forward_passes,
        "measure_seconds": rec.seconds,
        "serving": serving_notes(rec),
    }


def format_table(rec: AllocationRecord) -> str:
    """The terminal table: one row per unit."""
    head = ["unit", "weights", "scheme", "bits/w", *(f"sens:{d}" for d in rec.domains)]
    rows = [head]
    for u, (unit, c) in enumerate(zip(rec.units, rec.choice)):
        s = rec.schemes[c]
        rows.append(
            [
                unit.name,
                str(unit.numel),
                s.label,
                f"{unit_bits(unit, s) / unit.numel:.3f}",
                *(
                    f"{float(rec.per_domain[i, u, c]):.3g}"
                    for i in range(len(rec.domains))
                ),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"average bits {rec.average_bits:.4f} (budget {rec.budget:g}, reachable "
        f"{rec.bounds[0]:.4f}..{rec.bounds[1]:.4f}), {len(rec.units)} units, "
        f"{rec.forward_passes} forward passes in {rec.seconds:.1f} s"
    )
    lines += [f"serving: {n}" for n in serving_notes(rec)]
    return "\n".join(lines)


def plot(rec: AllocationRecord, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bits = [
        unit_bits(u, rec.schemes[c]) / u.numel for u, c in zip(rec.units, rec.choice)
    ]
    sens = np.array(
        [
            [float(rec.per_domain[i, u, c]) for i in range(len(rec.domains))]
            for u, c in enumerate(rec.choice)
        ]
    )
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, len(bits) * 0.12 + 4), 6))
    if rec.mode == "expert":
        layers = sorted({u.layer for u in rec.units if u.expert is not None})
        n_exp = 1 + max(u.expert for u in rec.units if u.expert is not None)
        grid = np.full((len(layers), n_exp), np.nan)
        sgrid = np.full((len(layers), n_exp), np.nan)
        for k, u in enumerate(rec.units):
            if u.expert is not None:
                grid[layers.index(u.layer), u.expert] = bits[k]
                sgrid[layers.index(u.layer), u.expert] = sens[k].mean()
        for ax, g, title in (
            (ax1, grid, "bits per weight"),
            (ax2, sgrid, "sensitivity (mean over domains)"),
        ):
            im = ax.imshow(g, aspect="auto", cmap="viridis")
            ax.set_yticks(range(len(layers)), [f"layer {i}" for i in layers])
            ax.set_xlabel("expert")
            ax.set_title(title)
            fig.colorbar(im, ax=ax)
    else:
        x = np.arange(len(bits))
        names = [u.name.removeprefix("layers.") for u in rec.units]
        ax1.bar(x, bits, color="tab:blue")
        ax1.set_ylabel("bits per weight")
        ax1.set_xticks(x, names, rotation=90, fontsize=7)
        for i, d in enumerate(rec.domains):
            ax2.plot(x, sens[:, i], marker="o", label=d)
        ax2.set_yscale("log")
        ax2.set_ylabel("sensitivity at the chosen scheme")
        ax2.set_xticks(x, names, rotation=90, fontsize=7)
        ax2.legend(fontsize=7)
    fig.suptitle(
        f"allocation: {rec.average_bits:.3f} bits/weight (budget {rec.budget:g})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(rec: AllocationRecord, directory: Path, modifier: str) -> list[Path]:
    """Write the four files into ``directory`` (a staging directory)."""
    paths = [
        directory / n
        for n in (
            "recipe.yaml",
            "layer_config.json",
            "allocation.json",
            "allocation.png",
        )
    ]
    header = (
        "# written by `vsraq allocate`: one config group per scheme "
        f"({rec.mode} units, {rec.average_bits:.4f} bits/weight)\n"
        '#   oneshot(model=..., dataset=..., recipe="recipe.yaml")\n'
    )
    paths[0].write_text(header + yaml.safe_dump(recipe(rec, modifier), sort_keys=False))
    paths[1].write_text(json.dumps(layer_config(rec), indent=1) + "\n")
    paths[2].write_text(json.dumps(allocation_json(rec), indent=1) + "\n")
    plot(rec, paths[3])
    return paths
