"""Tables of benchmarks/allocate_bench.py's finished steps (docs/allocate.md).

python benchmarks/allocate_bench.py --report
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["report", "spread", "stored_measurement"]


def stored_measurement(m: dict):
    """A Measurement from a measure*.json step (tables only)."""
    import torch

    from vsraq_modifier.allocate.sensitivity import Measurement

    kl, dis = torch.tensor(m["kl"]), torch.tensor(m["disagreement"])
    return Measurement(
        m["domains"],
        m["units"],
        m["schemes"],
        kl,
        dis,
        {},
        m["router_layers"],
        m["tokens"],
        0,
        0.0,
    )


def _label(d: dict) -> str:
    """The step's variant with its quantizer and seed where not mse / 0 (steps
    written before the --methods option have neither)."""
    method, seed = d.get("method", "mse"), d.get("seed", 0)
    return (
        d["variant"]
        + (f" +{method}" if method != "mse" else "")
        + (f" +s{seed}" if seed else "")
    )


def report(run: Path) -> str:
    """The markdown tables of docs/allocate.md from the finished steps."""
    ref = json.loads((run / "reference.json").read_text())["domains"]
    names = list(ref)
    rows = []
    for path in sorted(run.glob("q-*.json")):
        d = json.loads(path.read_text())
        e, o = d["eval"], d["eval"]["overall"]
        gap = o["perplexity"] - o["reference_perplexity"]
        same = (
            f" (= {d['same_as'].removeprefix('q-').removesuffix('.json')})"
            if "same_as" in d
            else ""
        )
        rows.append(
            f"| {_label(d)}{same} | {d['average_bits']:.4f} | {o['perplexity']:.3f} "
            f"| {gap:+.3f} | "
            + " | ".join(f"{e['domains'][n]['perplexity']:.3f}" for n in names)
            + f" | {o['kl']:.5f} | {o['disagreement']:.4f} "
            f"| {d['quantize_cpu_seconds']:.0f} |"
        )
    head = (
        "| variant | avg bits | ppl | ppl - ref | "
        + " | ".join(f"ppl {n}" for n in names)
        + " | KL | 1-J | quantize CPU s |\n|"
        + "---|" * (7 + len(names))
    )
    ref_row = (
        "| reference (fp32) | 32 | | | "
        + " | ".join(f"{ref[n]['perplexity']:.3f}" for n in names)
        + " | | | |"
    )
    tail = ""
    for name in ("measure", "measure-expert"):
        if (run / f"{name}.json").exists():
            m = json.loads((run / f"{name}.json").read_text())
            tail += (
                f"\n{name}: {len(m['units'])} units x {len(m['schemes'])} schemes, "
                f"{m['forward_passes']} forward passes, {m['cpu_seconds']:.0f} CPU s "
                f"({m['wall_seconds']:.0f} s wall)"
            )
    return "\n".join([head, ref_row, *rows]) + "\n" + tail + "\n\n" + spread(run)


def spread(run: Path) -> str:
    """How the layer-mode sensitivity is spread: per unit, what going from the
    cheaper to the richer scheme saves in each domain (KL + a x disagreement, a as
    `auto` sets it for equal weights), and its rank in each domain."""

    from vsraq_modifier.allocate.sensitivity import combine

    m = json.loads((run / "measure.json").read_text())
    meas = stored_measurement(m)
    w = {d: 1 / len(m["domains"]) for d in m["domains"]}
    _, per_domain, a = combine(meas, w, None)
    gain = per_domain[:, :, 0] - per_domain[:, :, 1]  # [D, U]
    ranks = gain.argsort(dim=1, descending=True).argsort(dim=1) + 1
    lines = [
        f"saving of {m['schemes'][1]} over {m['schemes'][0]} per unit (routing weight "
        f"a = {a:.4f}; rank in the domain in brackets)",
        "",
        "| unit | " + " | ".join(m["domains"]) + " |",
        "|---|" + "---|" * len(m["domains"]),
    ]
    for u, name in enumerate(m["units"]):
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{gain[d, u]:.4f} ({ranks[d, u]})" for d in range(len(m["domains"]))
            )
            + " |"
        )
    return "\n".join(lines)
