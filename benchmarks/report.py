"""Write docs/results.md and docs/img/*.png from the finished cells of a run.

    python benchmarks/report.py [--run-id ID]

Per method x scheme: mean ± std over seeds of routing disagreement (1 - mean
Jaccard), exact match, perplexity, oracle perplexity, KL; quantization time as the
mean over seeds of the ratio to mse with the same scheme and seed (same run); peak
RSS. Then the issue's target (part 5) checked cell by cell, the per-layer Jaccard,
and benchmarks/findings.md (the hand-written analysis) verbatim.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import DEFAULTS, RUNS, run_id_of  # noqa: E402

from vsraq_modifier.runs import METHODS, SCHEMES  # noqa: E402

TARGET_SCHEMES = ("W4A16", "W3A16")


def load_cells(run_dir: Path) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted(run_dir.glob("*.json"))
        if p.name != "run.json"
    ]


def _stats(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), sd


def _pm(values: list[float], digits: int) -> str:
    mean, sd = _stats(values)
    if math.isnan(mean):
        return "-"
    if math.isnan(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


class Table:
    """Cells indexed by (method, scheme) -> {seed: cell}."""

    def __init__(self, cells: list[dict]) -> None:
        self.by: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
        for c in cells:
            self.by[(c["method"], c["scheme"])][c["seed"]] = c
        self.methods = [m for m in METHODS if any(k[0] == m for k in self.by)]
        self.schemes = [s for s in SCHEMES if any(k[1] == s for k in self.by)]

    def values(self, method: str, scheme: str, key) -> list[float]:
        return [key(c) for _, c in sorted(self.by.get((method, scheme), {}).items())]

    def paired(self, a: str, b: str, scheme: str, key) -> list[tuple[float, float]]:
        ca, cb = self.by.get((a, scheme), {}), self.by.get((b, scheme), {})
        return [(key(ca[s]), key(cb[s])) for s in sorted(set(ca) & set(cb))]


def dis(c: dict) -> float:
    return 1.0 - c["eval"]["mean_jaccard"]


def ppl(c: dict) -> float:
    return c["eval"]["perplexity"]


def kl(c: dict) -> float:
    return c["eval"]["kl"]


def oracle(c: dict) -> float:
    return c["eval"]["oracle_perplexity"]


def qtime(c: dict) -> float:
    return c["quantization"]["seconds"]


def qcpu(c: dict) -> float:
    return c["quantization"].get("cpu_seconds", math.nan)


def _ratio_to_mse(t: Table, method: str, scheme: str, key) -> list[float]:
    return [a / b for a, b in t.paired(method, "mse", scheme, key) if b]


def main_table(t: Table, scheme: str) -> list[str]:
    head = (
        "| method | seeds | disagreement (1-J) | vs mse | exact match | perplexity "
        "| oracle ppl | ppl - oracle | KL | time vs mse (wall / CPU) | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 11]
    for m in t.methods:
        if not t.by.get((m, scheme)):
            continue
        n = len(t.by[(m, scheme)])
        ratio = _ratio_to_mse(t, m, scheme, dis)
        time_ratio = _ratio_to_mse(t, m, scheme, qtime)
        cpu_ratio = _ratio_to_mse(t, m, scheme, qcpu)
        gap = [
            p - o for p, o in zip(t.values(m, scheme, ppl), t.values(m, scheme, oracle))
        ]
        lines.append(
            f"| {m} | {n} | {_pm(t.values(m, scheme, dis), 4)} | {_pm(ratio, 2)} "
            f"| {_pm(t.values(m, scheme, lambda c: c['eval']['mean_exact_match']), 3)} "
            f"| {_pm(t.values(m, scheme, ppl), 3)} "
            f"| {_pm(t.values(m, scheme, oracle), 3)} "
            f"| {_pm(gap, 3)} | {_pm(t.values(m, scheme, kl), 5)} "
            f"| {_pm(time_ratio, 2)} / {_pm(cpu_ratio, 2)} "
            f"| {_pm(t.values(m, scheme, lambda c: c['peak_rss_mb']), 0)} |"
        )
    return lines


def _no_worse(t: Table, method: str, base: str, scheme: str, key) -> tuple[bool, str]:
    """Paired over seeds: mean(method - base) <= the base's std over seeds."""
    pairs = t.paired(method, base, scheme, key)
    if not pairs:
        return False, "no paired seeds"
    diff = statistics.fmean(a - b for a, b in pairs)
    noise = _stats([b for _, b in pairs])[1]
    noise = 0.0 if math.isnan(noise) else noise
    return diff <= noise, f"{diff:+.4g} (seed std of {base} {noise:.3g})"


def target_rows(t: Table, scheme: str) -> list[str]:
    rows = []
    if not (t.by.get(("vsraq", scheme)) and t.by.get(("mse", scheme))):
        return [f"| {scheme} | vsraq or mse not run | | |"]

    def mean_pairs(a, b, key):
        pairs = t.paired(a, b, scheme, key)
        return [x for x, _ in pairs], [y for _, y in pairs]

    v, m = mean_pairs("vsraq", "mse", dis)
    r = (
        statistics.fmean(v) / statistics.fmean(m)
        if m and statistics.fmean(m)
        else math.nan
    )
    rows.append(("disagreement <= 0.60x mse", r <= 0.60, f"{r:.2f}x"))
    ok, text = _no_worse(t, "vsraq", "mse", scheme, ppl)
    rows.append(("perplexity no worse than mse", ok, text))
    ok, text = _no_worse(t, "vsraq", "mse", scheme, kl)
    rows.append(("KL no worse than mse", ok, text))
    pv, pm = mean_pairs("vsraq", "mse", ppl)
    gaps = [ppl(c) - oracle(c) for _, c in sorted(t.by[("mse", scheme)].items())]
    gain, gain_sd = _stats(gaps)
    gain_sd = 0.0 if math.isnan(gain_sd) else gain_sd
    if gain > gain_sd:
        share = (statistics.fmean(pm) - statistics.fmean(pv)) / gain
        rows.append(
            (
                ">= half of mse's oracle gain",
                share >= 0.5,
                f"{share:.2f} of {gain:.3g} ppl",
            )
        )
    else:  # nothing to win back: the share of a gain within noise means nothing
        rows.append(
            (
                ">= half of mse's oracle gain",
                None,
                f"no gain beyond seed noise ({gain:.3g} ± {gain_sd:.3g} ppl)",
            )
        )
    for base in ("topk_mse", "router_kl"):
        if not t.by.get((base, scheme)):
            rows.append((f"better than {base}", False, "not run"))
            continue
        a, b = mean_pairs("vsraq", base, dis)
        better = statistics.fmean(a) < statistics.fmean(b)
        ok, text = _no_worse(t, "vsraq", base, scheme, ppl)
        rows.append(
            (
                f"better than {base} (disagreement, ppl not worse)",
                better and ok,
                f"1-J {statistics.fmean(a):.4f} vs {statistics.fmean(b):.4f}; "
                f"ppl {text}",
            )
        )
    tr = _ratio_to_mse(t, "vsraq", scheme, qtime)
    cr = _ratio_to_mse(t, "vsraq", scheme, qcpu)
    mean_tr = statistics.fmean(tr) if tr else math.nan
    mean_cr = statistics.fmean(cr) if cr else math.nan
    rows.append(
        (
            "time <= 1.15x mse (quantization CPU seconds)",
            mean_cr <= 1.15,
            f"{mean_cr:.2f}x CPU ({mean_tr:.2f}x wall)",
        )
    )
    verdict = {True: "yes", False: "**no**", None: "n/a"}
    return [
        f"| {scheme} | {what} | {verdict[ok]} | {value} |" for what, ok, value in rows
    ]


def layer_table(t: Table, scheme: str) -> list[str]:
    layers = sorted(
        {
            lm["layer"]
            for (m, s), cs in t.by.items()
            if s == scheme
            for c in cs.values()
            for lm in c["eval"]["layers"]
        }
    )
    lines = ["| method | " + " | ".join(f"L{i}" for i in layers) + " |"]
    lines.append("|" + "---|" * (len(layers) + 1))
    for m in t.methods:
        cells = t.by.get((m, scheme))
        if not cells:
            continue
        row = []
        for i in layers:
            vals = [
                lm["jaccard"]
                for c in cells.values()
                for lm in c["eval"]["layers"]
                if lm["layer"] == i
            ]
            row.append(f"{statistics.fmean(vals):.4f}" if vals else "-")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


TUNING_KEYS = ("iters", "nsamples", "seqlen", "batch_size")


def _options(settings: dict, cell: dict, main: dict | None = None) -> str:
    """The run's VSRAQ options as a table cell ("-" for methods they do not
    reach), after the tuning settings that differ from ``main``'s."""
    tuning = [
        f"{k}={settings[k]}"
        for k in TUNING_KEYS
        if main is not None and settings[k] != main[k]
    ]
    if cell["method"] in ("mse", "rtn"):
        return ", ".join(tuning) or "-"
    opts = [f"{k}={v}" for k, v in settings["options"].items()]
    return ", ".join(tuning + opts) or "defaults"


TIMING_PREFIX = "timing-"


def _runs(
    timing: bool, eval_text: str | None = None
) -> list[tuple[str, dict, list[dict]]]:
    """(name, settings, cells) of the timing runs (named ``timing-*``) or of
    the other runs evaluated on ``eval_text``."""
    out = []
    for meta_path in sorted(RUNS.glob("*/run.json")):
        name = meta_path.parent.name
        st = json.loads(meta_path.read_text())["settings"]
        if name.startswith(TIMING_PREFIX) != timing:
            continue
        if eval_text is not None and st.get("eval_text") != eval_text:
            continue
        out.append((name, st, load_cells(meta_path.parent)))
    return out


def sweep_table(
    main_settings: dict, eval_text: str = "validation", exclude: str = ""
) -> list[str]:
    """Every cell of the runs evaluated on ``eval_text`` (the validation split:
    the tuning of the defaults; the held-out text: option variants beside the
    main run ``exclude``), with its disagreement relative to mse of the same
    scheme, seed and tuning settings from a run of that text without options
    (tuning settings other than ``main_settings``' are named in the row)."""
    rows, mse = [], {}
    for name, st, cells in _runs(timing=False, eval_text=eval_text):
        setting = tuple(st[k] for k in TUNING_KEYS) + (st["eval_tokens"],)
        for c in cells:
            if c["method"] == "mse" and not st["options"]:
                mse.setdefault((c["scheme"], c["seed"], setting), c)
            if name != exclude:
                rows.append((name, st, setting, c))
    if not rows:
        return []
    lines = [
        "| run | scheme | seed | method | options | disagreement | vs mse "
        "| perplexity | KL |",
        "|" + "---|" * 9,
    ]
    rows.sort(key=lambda r: (r[3]["scheme"], r[3]["seed"], r[3]["method"], r[0]))
    for name, st, setting, c in rows:
        base = mse.get((c["scheme"], c["seed"], setting))
        ratio = f"{dis(c) / dis(base):.2f}x" if base else "-"
        opts = _options(st, c, main_settings)
        lines.append(
            f"| `{name}` | {c['scheme']} | {c['seed']} | {c['method']} | {opts} "
            f"| {dis(c):.4f} | {ratio} | {ppl(c):.3f} | {kl(c):.5f} |"
        )
    return lines


def timing_table() -> list[str]:
    """Quantization time of the runs named ``timing-*``: one cell at a time
    (``--jobs 1``) on otherwise idle cores, so wall time is meaningful; ratios
    to the mse cell of the same scheme and seed among them."""
    rows, mse = [], {}
    for name, st, cells in _runs(timing=True):
        for c in cells:
            rows.append((name, st, c))
            if c["method"] == "mse":
                mse[(c["scheme"], c["seed"])] = c
    if not rows:
        return []
    lines = [
        "| run | scheme | seed | method | options | quantization wall s | CPU s "
        "| wall vs mse | CPU vs mse | peak RSS MB |",
        "|" + "---|" * 10,
    ]
    rows.sort(key=lambda r: (r[2]["scheme"], r[2]["seed"], r[2]["method"], r[0]))
    for name, st, c in rows:
        base = mse.get((c["scheme"], c["seed"]))
        opts = _options(st, c)
        wall = f"{qtime(c) / qtime(base):.2f}x" if base else "-"
        cpu = f"{qcpu(c) / qcpu(base):.2f}x" if base else "-"
        lines.append(
            f"| `{name}` | {c['scheme']} | {c['seed']} | {c['method']} | {opts} "
            f"| {qtime(c):.1f} | {qcpu(c):.1f} | {wall} | {cpu} "
            f"| {c['peak_rss_mb']:.0f} |"
        )
    return lines


def plots(t: Table, img: Path) -> list[Path]:
    from matplotlib.figure import Figure

    img.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(t.methods))
    for j, m in enumerate(t.methods):
        xs, means, sds = [], [], []
        for i, s in enumerate(t.schemes):
            mean, sd = _stats(t.values(m, s, dis))
            xs.append(i + (j - (len(t.methods) - 1) / 2) * width)
            means.append(mean)
            sds.append(0.0 if math.isnan(sd) else sd)
        ax.bar(xs, means, width=width, yerr=sds, label=m, capsize=2)
    ax.set_xticks(range(len(t.schemes)), t.schemes)
    ax.set_ylabel("routing disagreement, 1 - mean Jaccard (lower is better)")
    ax.set_title(
        "Routing disagreement vs the full-precision model (mean ± std over seeds)"
    )
    ax.legend(fontsize="small", ncols=2)
    ax.grid(axis="y", alpha=0.3)
    out = [img / "disagreement.png"]
    fig.savefig(out[0], dpi=110)

    fig = Figure(figsize=(4.2 * max(1, len(t.schemes)), 4), layout="constrained")
    axes = fig.subplots(1, max(1, len(t.schemes)), squeeze=False)[0]
    for ax, s in zip(axes, t.schemes):
        for m in t.methods:
            cells = t.by.get((m, s))
            if not cells:
                continue
            per = defaultdict(list)
            for c in cells.values():
                for lm in c["eval"]["layers"]:
                    per[lm["layer"]].append(lm["jaccard"])
            layers = sorted(per)
            ax.plot(
                layers, [statistics.fmean(per[i]) for i in layers], marker="o", label=m
            )
        ax.set_title(s)
        ax.set_xlabel("decoder layer")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Jaccard vs reference (mean over seeds)")
    axes[-1].legend(fontsize="small")
    out.append(img / "layer_jaccard.png")
    fig.savefig(out[1], dpi=110)
    return out


def render(
    run_dir: Path, cells: list[dict], meta: dict, images: list[Path], out: Path
) -> str:
    t = Table(cells)
    settings = meta["settings"]
    expected = len(METHODS) * len(SCHEMES) * 3
    complete = len(cells) >= expected
    machine = meta["machine"]
    versions = cells[0]["versions"] if cells else {}
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/report.py` from the cell files in "
        f"`{run_dir.relative_to(ROOT)}/`; do not edit by hand (the analysis is "
        "`benchmarks/findings.md`, included below).",
        "",
        (
            f"**Complete: {len(cells)} of {expected} cells.**"
            if complete
            else f"**Partial: {len(cells)} of {expected} cells finished** "
            "(methods x schemes x 3 seeds); missing cells are left out of the tables."
        ),
        "",
        "## Setup",
        "",
        "Commands (in order):",
        "",
        "```",
        *meta["commands"],
        "```",
        "",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), torch "
        f"{machine['torch']}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "torch"),
        "- Model: "
        + (settings["model"] or "the shipped model (vsraq_modifier/data/model)"),
        f"- Tuning: {settings['iters']} iterations, {settings['nsamples']} calibration "
        f"samples x {settings['seqlen']} tokens (seeded windows from the first 80 % of "
        f"the calibration text), batch {settings['batch_size']}, "
        f"{settings['threads']} torch thread(s) per cell",
        f"- Evaluation: first {settings['eval_tokens']} tokens of the "
        f"{settings['eval_text']} text in chunks of {settings['eval_seq_len']}; "
        "every layer quantized, each model on its own activations (docs/report.md)",
        "- VSRAQ options added to the defaults: "
        + (json.dumps(settings["options"]) if settings["options"] else "none"),
        "- Time: quantization time (AutoRound construction to saved files) as the "
        "ratio to mse with the same scheme and seed in this run, wall and CPU "
        "seconds. Cells run one torch thread each, two or three at a time on the 2 "
        "cores, so wall time depends on what ran beside a cell; CPU seconds do not, "
        "and the target is checked on them. Peak RSS of the cell's process "
        "(quantization and evaluation), MiB.",
        "",
    ]
    for s in t.schemes:
        lines += [f"## {s}: {SCHEMES[s].description}", "", *main_table(t, s), ""]
    lines += [
        "## The target (issue 6, part 5)",
        "",
        'vsraq against mse at equal bits and iterations. "No worse beyond seed '
        'noise": the mean over seeds of the paired difference is at most the '
        "baseline's standard deviation over seeds. Oracle gain: mse's perplexity "
        "minus its oracle perplexity; the share is (mse ppl - vsraq ppl) / that gain "
        "(n/a where the gain is not larger than its own spread over seeds).",
        "",
        "| scheme | criterion | met | measured |",
        "|---|---|---|---|",
    ]
    for s in TARGET_SCHEMES:
        if s in t.schemes:
            lines += target_rows(t, s)
    lines += ["", "## Jaccard per MoE layer (mean over seeds)", ""]
    for s in t.schemes:
        lines += [f"### {s}", "", *layer_table(t, s), ""]
    variants = sweep_table(settings, "heldout", exclude=run_dir.name)
    if variants:
        lines += [
            "## Variants on the held-out text",
            "",
            "Runs beside the main one on the same held-out text, with VSRAQ options "
            "changed (`benchmarks/run.py --option KEY=VALUE`), or with an earlier "
            "version of the code (the run directory says which). Disagreement "
            "relative to mse of the same scheme, seed and tuning settings (the "
            "main run's, unless the row names others).",
            "",
            *variants,
            "",
        ]
    timing = timing_table()
    if timing:
        lines += [
            "## Time on idle cores",
            "",
            "The runs named `timing-*` ran one cell at a time (`--jobs 1`, one "
            "torch thread) with nothing else on the machine, so their wall times "
            "are comparable, unlike the main run's (2 cells at a time). Evaluation "
            "is left out of the times.",
            "",
            *timing,
            "",
        ]
    sweep = sweep_table(settings)
    if sweep:
        lines += [
            "## Tuning runs on the validation split",
            "",
            "Every cell evaluated on the validation split (the last 20 % of the "
            "calibration text, never used for calibration windows; "
            "`benchmarks/run.py --eval-text validation`): the defaults were chosen "
            "from these, never from the held-out text. The code of each run is the "
            "code at the time it ran (the run directory names a code change where "
            "one made earlier cells stale).",
            "",
            *sweep,
            "",
        ]
    lines += ["## Plots", ""]
    for p in images:
        lines.append(f"![{p.stem}]({p.relative_to(out.parent).as_posix()})")
        lines.append("")
    findings = HERE / "findings.md"
    if findings.exists():
        lines += [findings.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_id = run_id_of(
        {**DEFAULTS, "eval_text": "heldout", "options": {}, "model": None}
    )
    ap.add_argument("--run-id", default=default_id, help=f"default: {default_id}")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args(argv)
    run_dir = RUNS / args.run_id
    meta_path = run_dir / "run.json"
    if not meta_path.exists():
        sys.exit(f"report.py: no run at {run_dir}; run benchmarks/run.py first")
    cells = load_cells(run_dir)
    if not cells:
        sys.exit(f"report.py: no finished cells in {run_dir}")
    meta = json.loads(meta_path.read_text())
    images = plots(Table(cells), args.img)
    args.out.write_text(render(run_dir, cells, meta, images, args.out.resolve()) + "\n")
    print(f"wrote {args.out} ({len(cells)} cells) and {', '.join(map(str, images))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
