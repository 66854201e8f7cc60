"""Tables of benchmarks/allocate_bench.py's finished steps (docs/allocate.md).

python benchmarks/allocate_bench.py --report
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["report", "spread", "stored_measurement", "summary"]


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


def _steps(run: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """(variant, method) -> {seed: step}, of the finished quantization steps."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(run.glob("q-*.json")):
        d = json.loads(path.read_text())
        key = (d["variant"], d.get("method", "mse"))
        out.setdefault(key, {})[d.get("seed", 0)] = d
    return out


def _gap(d: dict) -> float:
    o = d["eval"]["overall"]
    return o["perplexity"] - o["reference_perplexity"]


def _pm(xs: list[float], digits: int) -> str:
    import statistics

    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def summary(run: Path) -> str:
    """Mean ± standard deviation over seeds per variant and quantizer, and the
    issue's targets: the perplexity gap to the reference at most 0.8x
    AutoScheme's at the same budget and quantizer (paired by seed), no domain's
    perplexity worse than the nearest uniform scheme's (W2A16G64, the uniform
    scheme below both budgets), and the measurement's time against one mse
    quantization."""
    import statistics

    ref = json.loads((run / "reference.json").read_text())["domains"]
    names = list(ref)
    steps = _steps(run)
    lines = [
        "| variant | quantizer | seeds | avg bits | ppl - ref | "
        + " | ".join(f"ppl {n}" for n in names)
        + " | KL | 1-J | quantize CPU s |",
        "|---|---|---|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for (variant, method), by_seed in sorted(steps.items()):
        ds = [by_seed[s] for s in sorted(by_seed)]
        lines.append(
            f"| {variant} | {method} | {len(ds)} | {ds[0]['average_bits']:.4f} | "
            f"{_pm([_gap(d) for d in ds], 3)} | "
            + " | ".join(
                _pm([d["eval"]["domains"][n]["perplexity"] for d in ds], 3)
                for n in names
            )
            + f" | {_pm([d['eval']['overall']['kl'] for d in ds], 5)} | "
            f"{_pm([d['eval']['overall']['disagreement'] for d in ds], 4)} | "
            f"{statistics.fmean(d['quantize_cpu_seconds'] for d in ds):.0f} |"
        )
    target = [
        "",
        "| budget | quantizer | allocation | seeds | gap / AutoScheme's gap (<= 0.8x) "
        "| domains worse than uniform W2A16G64 | met |",
        "|---|---|---|---|---|---|---|",
    ]
    budgets = sorted({v.split("-", 1)[1] for v, _ in steps if v.startswith("alloc-")})
    methods = sorted({m for _, m in steps})
    for b in budgets:
        for m in methods:
            auto = steps.get((f"autoscheme-{b}", m), {})
            uni = steps.get(("uniform-W2A16G64", m), {})
            for v in (f"alloc-{b}", f"ealloc-{b}"):
                mine = steps.get((v, m), {})
                seeds = sorted(set(mine) & set(auto))
                if not seeds:
                    continue
                ratio = statistics.fmean(_gap(mine[s]) for s in seeds) / statistics.fmean(
                    _gap(auto[s]) for s in seeds
                )
                both = sorted(set(mine) & set(uni))
                worse = [
                    n for n in names
                    if both and statistics.fmean(
                        mine[s]["eval"]["domains"][n]["perplexity"] for s in both
                    ) > statistics.fmean(
                        uni[s]["eval"]["domains"][n]["perplexity"] for s in both
                    )
                ]
                met = ratio <= 0.8 and not worse and bool(both)
                target.append(
                    f"| {b} | {m} | {v} | {len(seeds)} | {ratio:.3f}x | "
                    f"{', '.join(worse) if worse else ('none' if both else '-')} | "
                    f"{'yes' if met else 'no'} |"
                )
    tail = []
    # seed 0's mse steps ran in the same invocation as the measurements (the
    # other seeds and quantizers came later, on other machines and loads)
    mse_cpu = [by[0]["quantize_cpu_seconds"]
               for (v, m), by in steps.items()
               if m == "mse" and v.startswith("uniform-") and 0 in by]
    for name in ("measure", "measure-expert"):
        if (run / f"{name}.json").exists() and mse_cpu:
            cpu = json.loads((run / f"{name}.json").read_text())["cpu_seconds"]
            tail.append(
                f"{name}: {cpu:.0f} CPU s = {cpu / statistics.fmean(mse_cpu):.2f}x one "
                f"uniform mse quantization of the same run (seed 0, mean "
                f"{statistics.fmean(mse_cpu):.0f} CPU s, {len(mse_cpu)} uniform schemes)"
            )
    return "\n".join(lines + target) + ("\n\n" + "\n\n".join(tail) if tail else "")
