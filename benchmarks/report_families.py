"""The two-family, two-budget matrix of docs/results.md: both shipped models
(Qwen3-MoE, DeepSeek-V3) at the default calibration budget and a small one, per
scheme and method against mse of the same model, budget, scheme and seed; the
target of the "routing loss that never costs quality" issue checked cell group
by cell group; and whether routing agreement predicts quality across all cells
(Spearman's rank correlation, with a scatter plot).

``report.py`` renders it; the runs it reads are :data:`FAMILY_RUNS` (each made by
the ``benchmarks/run.py`` command :func:`commands` prints).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from report_tables import _pm, _stats, dis, kl, load_cells, ppl, qcpu
from run import RUNS, run_id_of

from vsraq_modifier.runs import METHODS

#: the budgets: (label, benchmarks/run.py settings)
BUDGETS = {
    "default": {"iters": 100, "nsamples": 128, "seqlen": 256},
    "small": {"iters": 50, "nsamples": 32, "seqlen": 128},
}
MODELS = {"qwen3_moe": None, "deepseek_v3": "deepseek_v3"}
EVAL_TOKENS = 16384
#: the schemes reported, in this order (a group appears only where cells ran)
SCHEMES = ("W4A16G64", "W3A16", "W2A16G64", "NVFP4")


def settings(model: str, budget: str) -> dict:
    """The run.py settings of one (model, budget) run."""
    return {
        **BUDGETS[budget],
        "batch_size": 8,
        "eval_tokens": EVAL_TOKENS,
        "eval_seq_len": 256,
        "threads": 1,
        "eval_text": "heldout",
        "options": {},
        "model": MODELS[model],
    }


#: (model, budget) -> run directory name
FAMILY_RUNS = {
    (m, b): run_id_of(settings(m, b)) for m in MODELS for b in BUDGETS
}


#: the default budget's matrix rerun on one CPU model, every method of a model
#: in one run (cells on another CPU model round differently, so the matrix above,
#: whose cells ran across sessions, pairs them across draws): (model) -> run id
ONE_CPU_SUFFIX = "-xeon"
ONE_CPU_RUNS = {
    m: FAMILY_RUNS[(m, "default")] + ONE_CPU_SUFFIX for m in MODELS
}
ONE_CPU_METHODS = ("mse", "vsraq_default", "vsraq_refit")
#: DeepSeek-V3's default rerun on another CPU model once the sigmoid re-fit built
#: its per-expert Gram matrices in stacked products (same checkpoint bytes, less
#: time), and again with the logits target (the default for sigmoid routers since
#: then): run id -> what the run's vsraq_default re-fits with
SOLVE_RUN = FAMILY_RUNS[("deepseek_v3", "default")] + "-epyc"
LOGITS_RUN = FAMILY_RUNS[("deepseek_v3", "default")] + "-logits-epyc"
SOLVE_RUNS = {
    SOLVE_RUN: ("the sigmoid target, the default then", ""),
    LOGITS_RUN: (
        "the logits target, the default now",
        " --option router_refit_target=logits",
    ),
}
SOLVE_METHODS = ("mse", "vsraq_default")
#: the default as it is now (the logits target for sigmoid routers), both models
#: and budgets on one CPU model, per code change: run-id suffix -> what changed
CURRENT_SUFFIXES = {
    "-measure8-epyc": "the log line's agreement on 8 samples",
    "-fastcheck-epyc": "that, and the cheaper NaN/inf checks of the re-fit and "
    "the routing terms",
    "-attnref-epyc": "that, and the look-ahead's attention frozen at the "
    "reference on tuning steps (`lookahead_attention: reference`, the default "
    "now; other bytes)",
}


def current_runs(suffix: str) -> dict[tuple[str, str], str]:
    """(model, budget) -> run id of one :data:`CURRENT_SUFFIXES` entry."""
    return {k: rid + suffix for k, rid in FAMILY_RUNS.items()}


def commands(methods: list[str]) -> list[str]:
    """The benchmarks/run.py command of each run (resumable: a finished cell is
    skipped)."""
    out = []
    for (m, b), _ in FAMILY_RUNS.items():
        s = settings(m, b)
        model = f" --model {s['model']}" if s["model"] else ""
        out.append(
            f"python benchmarks/run.py --jobs 2{model} --iters {s['iters']} "
            f"--nsamples {s['nsamples']} --seqlen {s['seqlen']} "
            f"--eval-tokens {EVAL_TOKENS} --schemes {' '.join(SCHEMES)} "
            f"--methods {' '.join(methods)}"
        )
    return out


def _run_command(
    model: str,
    methods: tuple[str, ...],
    run_id: str,
    *,
    jobs: int,
    budget: str = "default",
    option: str = "",
) -> str:
    """The benchmarks/run.py command of one W4A16G64, three-seed run."""
    flags = (f" --model {MODELS[model]}" if MODELS[model] else "") + "".join(
        f" --{k} {v}" for k, v in BUDGETS[budget].items() if budget != "default"
    )
    return (
        f"python benchmarks/run.py --jobs {jobs}{flags} --eval-tokens {EVAL_TOKENS} "
        f"--schemes W4A16G64 --seeds 0 1 2 --methods {' '.join(methods)}{option} "
        f"--run-id {run_id}"
    )


def family_cells(runs: Path = RUNS, run_ids: dict | None = None) -> dict:
    """(model, budget) -> the finished cells of its run (empty if not run);
    ``run_ids``: key -> run id, :data:`FAMILY_RUNS` by default (the result is
    keyed as ``run_ids`` is)."""
    out = {}
    for key, rid in (FAMILY_RUNS if run_ids is None else run_ids).items():
        d = runs / rid
        out[key] = load_cells(d) if d.is_dir() else []
    return out


def _index(cells: list[dict]) -> dict[tuple[str, str, int], dict]:
    return {(c["method"], c["scheme"], c["seed"]): c for c in cells}


def _paired(idx: dict, method: str, scheme: str, key) -> list[tuple[float, float]]:
    """(method's value, mse's value) per seed both have."""
    seeds = sorted(
        s for (m, sc, s) in idx if m == method and sc == scheme
        and ("mse", scheme, s) in idx
    )
    return [(key(idx[(method, scheme, s)]), key(idx[("mse", scheme, s)])) for s in seeds]


def _ratio(pairs: list[tuple[float, float]]) -> str:
    r = [a / b for a, b in pairs if b and math.isfinite(a / b)]
    return _pm(r, 2) + "x" if r else "-"


def _delta(pairs: list[tuple[float, float]], digits: int) -> str:
    d = [a - b for a, b in pairs]
    return (("+" if _stats(d)[0] >= 0 else "") + _pm(d, digits)) if d else "-"


def _rss(c: dict) -> float:
    return c.get("peak_rss_quant_mb", math.nan)


def group_table(cells: list[dict], scheme: str) -> list[str]:
    """One (model, budget, scheme): every method against mse, paired by seed."""
    idx = _index(cells)
    methods = [m for m in METHODS if any(k[0] == m and k[1] == scheme for k in idx)]
    rows = [
        "| method | seeds | disagreement | vs mse | perplexity | Δ ppl vs mse | "
        "oracle ppl | KL | Δ KL vs mse | CPU time vs mse | peak memory vs mse |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        mine = [c for (mm, sc, _), c in sorted(idx.items()) if mm == m and sc == scheme]
        rows.append(
            f"| {m} | {len(mine)} | {_pm([dis(c) for c in mine], 4)} | "
            f"{_ratio(_paired(idx, m, scheme, dis))} | "
            f"{_pm([ppl(c) for c in mine], 3)} | "
            f"{_delta(_paired(idx, m, scheme, ppl), 3)} | "
            f"{_pm([c['eval']['oracle_perplexity'] for c in mine], 3)} | "
            f"{_pm([kl(c) for c in mine], 5)} | "
            f"{_delta(_paired(idx, m, scheme, kl), 5)} | "
            f"{_ratio(_paired(idx, m, scheme, qcpu))} | "
            f"{_ratio(_paired(idx, m, scheme, _rss))} |"
        )
    return rows


def _sd(value: float, digits: int) -> str:
    """A standard deviation, or '-' where one seed gives none."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _spread(xs: list[float]) -> float:
    """Standard deviation over seeds, NaN for one seed."""
    return statistics.stdev(xs) if len(xs) > 1 else math.nan


def _no_worse(pairs: list[tuple[float, float]], base: list[float]) -> bool | None:
    """Mean paired difference at most mse's spread over seeds."""
    if len(pairs) < 2:
        return None
    d = statistics.fmean(a - b for a, b in pairs)
    return d <= statistics.stdev(base)


def target_rows(
    groups: dict[tuple[str, str], list[dict]], method: str = "vsraq"
) -> list[str]:
    """The issue's target per (model, budget, scheme): perplexity and KL no worse
    than mse beyond seed noise, disagreement <= 0.90x mse ('-' with one seed)."""
    rows = [
        f"| model | budget | scheme | {method} disagreement vs mse (<= 0.90x) | "
        "Δ ppl (no worse than mse's seed sd) | Δ KL (same) | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for (model, budget), cells in groups.items():
        idx = _index(cells)
        for s in SCHEMES:
            d = _paired(idx, method, s, dis)
            if not d:
                continue
            p, k = _paired(idx, method, s, ppl), _paired(idx, method, s, kl)
            ratio = statistics.fmean(a / b for a, b in d)
            ok_p = _no_worse(p, [b for _, b in p])
            ok_k = _no_worse(k, [b for _, b in k])
            if ok_p is None:  # one seed: no seed spread to judge the noise by
                met = "-"
            else:
                met = "yes" if ratio <= 0.90 and ok_p and ok_k else "no"
            sd_p, sd_k = _spread([b for _, b in p]), _spread([b for _, b in k])
            rows.append(
                f"| {model} | {budget} | {s} | {ratio:.2f}x | "
                f"{statistics.fmean(a - b for a, b in p):+.3f} (sd {_sd(sd_p, 3)}) | "
                f"{statistics.fmean(a - b for a, b in k):+.5f} (sd {_sd(sd_k, 5)}) | "
                f"{met} |"
            )
    return rows


def _spearman(x: list[float], y: list[float]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(x) < 3:
        return math.nan, math.nan
    r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


def correlation(
    groups: dict[tuple[str, str], list[dict]],
) -> tuple[list[str], dict[str, list[tuple[float, float, float, str]]]]:
    """Does better routing predict better quality? Spearman's rho over every cell
    (raw: scheme and model dominate both), and over the cells' paired
    differences to mse of the same model, budget, scheme and seed (what the
    routing terms change), each model alone and both together."""
    points: dict[str, list[tuple[float, float, float, str]]] = defaultdict(list)
    raw: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for (model, budget), cells in groups.items():
        idx = _index(cells)
        for (m, s, seed), c in idx.items():
            ref = c["eval"]["reference_perplexity"]
            raw[model].append((dis(c), kl(c), ppl(c) - ref))
            base = idx.get(("mse", s, seed))
            if base is None or m == "mse":
                continue
            points[model].append(
                (dis(c) - dis(base), kl(c) - kl(base), ppl(c) - ppl(base),
                 f"{budget} {s}")
            )
    rows = [
        "| cells | n | rho(disagreement, KL) | rho(disagreement, ppl change) |",
        "|---|---|---|---|",
    ]

    def row(label: str, xs: list[float], ks: list[float], ps: list[float]) -> str:
        rk, pk = _spearman(xs, ks)
        rp, pp = _spearman(xs, ps)
        return (
            f"| {label} | {len(xs)} | {rk:+.2f} (p {pk:.2g}) | {rp:+.2f} (p {pp:.2g}) |"
        )

    for model in MODELS:
        if raw.get(model):
            x, k, p = zip(*raw[model])
            rows.append(row(f"{model}, every cell (raw values)", x, k, p))
    for model in MODELS:
        if points.get(model):
            x, k, p, _ = zip(*points[model])
            rows.append(row(f"{model}, difference to mse (paired)", x, k, p))
    both = [q for m in MODELS for q in points.get(m, [])]
    if both:
        x, k, p, _ = zip(*both)
        rows.append(row("both models, difference to mse (paired)", x, k, p))
    return rows, dict(points)


def scatter(points: dict[str, list[tuple[float, float, float, str]]], out: Path) -> Path:
    """Paired differences to mse: disagreement vs KL and vs perplexity."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    markers = {"qwen3_moe": "o", "deepseek_v3": "^"}
    labels = sorted({g for pts in points.values() for *_, g in pts})
    colours = {g: f"C{i}" for i, g in enumerate(labels)}
    for model, pts in points.items():
        for g in labels:
            sel = [q for q in pts if q[3] == g]
            if not sel:
                continue
            x = [q[0] for q in sel]
            for ax, j in zip(axes, (1, 2)):
                ax.scatter(x, [q[j] for q in sel], marker=markers.get(model, "s"),
                           color=colours[g], alpha=0.7, label=f"{model} {g}")
    for ax, what in zip(axes, ("KL", "perplexity")):
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("routing disagreement minus mse's (same seed)")
        ax.set_ylabel(f"{what} minus mse's")
        ax.grid(alpha=0.3)
    axes[0].set_title("Does better routing give lower KL?")
    axes[1].set_title("... and lower perplexity?")
    axes[1].legend(fontsize="x-small", ncols=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def overturn_rows(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """The step cap's measurement, per model and budget: the share of the host's
    step signs the routing terms overturned at each block's first step (before
    the cap) and the factor the cap put on them, over the vsraq cells' blocks
    with a look-ahead router and over the last block (none)."""
    rows = [
        "| model | budget | blocks | overturned, blocks with look-ahead (min / median / max) | factor (median) | overturned, last block (median) |",
        "|---|---|---|---|---|---|",
    ]
    for (model, budget), cells in groups.items():
        ahead, last, factor = [], [], []
        for c in cells:
            if c["method"] != "vsraq":
                continue
            blocks = [b for b in c.get("blocks", []) if b.get("cap")]
            for b in blocks:
                has_ahead = any("look-ahead" in k for k in b["agreement_after"])
                (ahead if has_ahead else last).append(b["cap"][1])
                if has_ahead:
                    factor.append(b["cap"][0])
        if not ahead:
            continue
        rows.append(
            f"| {model} | {budget} | {len(ahead) + len(last)} | "
            f"{100 * min(ahead):.1f} / {100 * statistics.median(ahead):.1f} / "
            f"{100 * max(ahead):.1f} % | {statistics.median(factor):.3f} | "
            + (f"{100 * statistics.median(last):.1f} % |" if last else "- |")
        )
    return rows


def section(img: Path, out_dir: Path) -> list[str]:
    """The markdown of the two-family section (empty when no run exists)."""
    groups = {k: v for k, v in family_cells().items() if v}
    if not groups:
        return []
    methods = sorted({c["method"] for cs in groups.values() for c in cs},
                     key=list(METHODS).index)
    lines = [
        "## Two model families, two calibration budgets",
        "",
        "Both shipped models (docs/model.md): Qwen3-MoE (softmax, 32 experts, "
        "top-2) and DeepSeek-V3 (sigmoid scores + selection bias, 4 groups of 4 "
        "experts, top-4, a shared expert, dense first layer), each at the default "
        f"budget (128 x 256 calibration tokens, 100 iterations) and a small one "
        f"(32 x 128, 50 iterations); first {EVAL_TOKENS} held-out tokens. "
        "Differences are paired by seed against mse of the same model, budget and "
        "scheme. CPU time and memory are paired the same way, but cells of "
        "different sessions ran on different machines and loads (most `*_refit` "
        "cells ran a session after their mse cells): times under the same conditions are in \"Time, one cell at "
        "a time\". Commands (each resumable):",
        "",
        "```",
        *commands(methods),
        "```",
        "",
    ]
    for (model, budget), cells in groups.items():
        for s in SCHEMES:
            if any(c["scheme"] == s for c in cells):
                lines += [f"### {model}, {budget} budget, {s}", "",
                          *group_table(cells, s), ""]
    lines += [
        "### The target: vsraq never worse than mse",
        "",
        "Perplexity and KL of vsraq (with its default safeguards, `best_iteration: "
        "host` and `max_flip_share: 0.05`, and the router re-fit off) no worse "
        "than mse beyond seed noise (mean paired difference at most mse's "
        "standard deviation over seeds), routing disagreement at most 0.90x "
        "mse's; '-' where one seed ran (no spread to judge by).",
        "",
        *target_rows(groups),
        "",
    ]
    if any(c["method"] == "vsraq_refit" for cs in groups.values() for c in cs):
        lines += [
            "The same check for `vsraq_refit` (vsraq with its safeguards and the "
            "in-loop router re-fit, `router_refit: ridge`: what `--loss vsraq` "
            "does by default since `router_refit: auto`):",
            "",
            *target_rows(groups, "vsraq_refit"),
            "",
        ]
    if any(c["method"] == "vsraq_unguarded" for cs in groups.values() for c in cs):
        lines += [
            "The same check for `vsraq_unguarded` (both safeguards off: the kept "
            "iteration chosen on host + routing loss, no step cap; the method "
            "before them):",
            "",
            *target_rows(groups, "vsraq_unguarded"),
            "",
        ]
    over = overturn_rows(groups)
    if len(over) > 2:
        lines += [
            "### How much of the step the routing terms took",
            "",
            "At each block's first step, the share of the parameters AutoRound's "
            "gradient moves whose SignSGD sign the routing terms overturned (before "
            "the `max_flip_share` cap; the factor the cap then put on them), from "
            "the `blocks` records of the vsraq cells:",
            "",
            *over,
            "",
        ]
    rows, points = correlation(groups)
    png = scatter(points, img / "routing_vs_quality.png")
    lines += [
        "### Does better routing predict better quality?",
        "",
        "Spearman's rank correlation of routing disagreement with KL and with the "
        "perplexity change, over every cell of the matrix (raw values: the scheme "
        "moves both, so these are large whatever routing does) and over each "
        "cell's difference to mse of the same model, budget, scheme and seed "
        "(what a routing loss or re-fit changes).",
        "",
        *rows,
        "",
        f"![routing_vs_quality]({png.relative_to(out_dir).as_posix()})",
        "",
    ]
    return lines


def one_cpu_section(runs: Path = RUNS) -> list[str]:
    """The default against mse and against the look-ahead on every step, each
    model's cells in one run on one CPU model (empty when none ran)."""
    ids = {(m, "default"): rid for m, rid in ONE_CPU_RUNS.items()}
    groups = {k: v for k, v in family_cells(runs, ids).items() if v}
    if not groups:
        return []
    cpus = sorted({c.get("cpu") or "?" for cs in groups.values() for c in cs})
    lines = [
        "## The default on one CPU model (held-out text)",
        "",
        "`vsraq_default` is what `--loss vsraq` does (the re-fit and the "
        "look-ahead on every other step, `lookahead_every: 2`); `vsraq_refit` is "
        "the same with the look-ahead on every step, as the matrix above ran it. "
        "Default budget, W4A16G64, first "
        f"{EVAL_TOKENS} held-out tokens; every cell of a model in one run, one "
        "cell per core (the two models side by side), on one CPU model ("
        + ", ".join(cpus)
        + "), so the pairs are within one draw of the kernels' rounding and CPU "
        "time is comparable. Commands:",
        "",
        "```",
        *(
            _run_command(m, ONE_CPU_METHODS, rid, jobs=1)
            for m, rid in ONE_CPU_RUNS.items()
        ),
        "```",
        "",
    ]
    for (model, _), cells in groups.items():
        lines += [f"### {model}", "", *group_table(cells, "W4A16G64"), ""]
    lines += [
        "The routing-loss issue's target for the default (disagreement <= 0.90x "
        "mse, perplexity and KL no worse than mse's seed sd):",
        "",
        *target_rows(groups, "vsraq_default"),
        "",
    ]
    return lines


def solve_section(runs: Path = RUNS) -> list[str]:
    """DeepSeek-V3's default against mse, each run on one CPU model, after the
    faster sigmoid re-fit and with the logits target (empty when neither ran)."""
    ids = {rid: rid for rid in SOLVE_RUNS}
    groups = {k: v for k, v in family_cells(runs, ids).items() if v}
    if not groups:
        return []
    cpus = sorted({c.get("cpu") or "?" for cs in groups.values() for c in cs})
    lines = [
        "### deepseek_v3 after the faster sigmoid re-fit",
        "",
        "The sigmoid target weights every expert's tokens differently, so its "
        "re-fit builds one Gram matrix per expert; since they are built in "
        "stacked products (`vsraq_modifier/refit/solve.py`) the checkpoints are "
        "byte-identical and the re-fit takes half the time (profiled: docs/refit.md, "
        "\"Cost\"). The logits target, which routed as well on the validation "
        "split (docs/refit.md, \"Sigmoid routers\"), needs one shared Gram matrix "
        "and is the default for sigmoid routers now. mse and vsraq_default, every "
        "cell of a run on one CPU model, "
        + ", ".join(cpus)
        + " (another CPU model than the run above: compare the ratios, not the "
        "numbers):",
        "",
    ]
    for rid, cells in groups.items():
        what, option = SOLVE_RUNS[rid]
        lines += [
            f"vsraq_default with {what}:",
            "",
            "```",
            _run_command("deepseek_v3", SOLVE_METHODS, rid, jobs=2, option=option),
            "```",
            "",
            *group_table(cells, "W4A16G64"),
            "",
        ]
    return lines


def _per_seed_ratios(cells: list[dict], key) -> str:
    """vsraq_default's ratio to mse of the same seed, seed by seed."""
    pairs = _paired(_index(cells), "vsraq_default", "W4A16G64", key)
    return ", ".join(f"{a / b:.2f}" for a, b in pairs) or "-"


def current_section(runs: Path = RUNS) -> list[str]:
    """The default as the code runs it now against mse, both models and budgets,
    each (model, budget)'s cells in one run on one CPU model, one block per code
    change (empty when none ran)."""
    ran = {}
    for suffix in CURRENT_SUFFIXES:
        ids = current_runs(suffix)
        groups = {k: v for k, v in family_cells(runs, ids).items() if v}
        if groups:
            ran[suffix] = (ids, groups)
    if not ran:
        return []
    cells = [c for _, gs in ran.values() for cs in gs.values() for c in cs]
    cpus = sorted({c.get("cpu") or "?" for c in cells})
    lines = [
        "### The default as it runs now, both models",
        "",
        "Two changes since the runs above leave the checkpoints the same bytes and "
        "cut time only; a third (the look-ahead's attention at the reference, "
        "last block below) changes the bytes. The block log line measures its before/after routing "
        "agreement on the first 8 calibration samples (one default batch) "
        "instead of 32 (`MEASURE_SAMPLES` in `vsraq_modifier/session/block.py`; "
        "the two passes were about 2 % of a DeepSeek-V3 cell in a profile). The "
        "re-fit's and the routing terms' NaN/inf checks test a sum's finiteness "
        "first (`all_finite` in `vsraq_modifier/guards.py`; `isfinite().all()` "
        "on the router inputs was 2.8 s of a profiled Qwen3-MoE cell). Same bytes: "
        "seed by seed, the cells give the same disagreement, perplexity and KL "
        "to the last digit as the run before the change on this CPU model "
        "(DeepSeek-V3's first run against the logits-target run above, each "
        "model's second run against its first; Qwen3-MoE had no earlier run on "
        "it). mse and "
        "vsraq_default, every cell of a model in one run, two cells at a time, "
        "on one CPU model (" + ", ".join(cpus) + "):",
        "",
    ]
    for suffix, (ids, groups) in ran.items():
        lines += [
            f"**With {CURRENT_SUFFIXES[suffix]}:**",
            "",
            "```",
            *(
                _run_command(m, SOLVE_METHODS, rid, jobs=2, budget=b)
                for (m, b), rid in ids.items()
                if (m, b) in groups
            ),
            "```",
            "",
        ]
        for (model, budget), cs in groups.items():
            lines += [
                f"{model}, {budget} budget:",
                "",
                *group_table(cs, "W4A16G64"),
                "",
                "vsraq_default's quantization CPU time against mse's, seed by "
                "seed: " + _per_seed_ratios(cs, qcpu) + ".",
                "",
            ]
    return lines
