"""The benchmark's tables (docs/results.md): cells loaded from the run
directories, their statistics against mse, the targets, the option variants and
the timing runs. ``report.py`` renders them with the plots."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from run import RUNS

from vsraq_modifier.runs import METHODS, SCHEMES

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
    if settings.get("model"):
        tuning.insert(0, f"model={settings['model']}")
    if cell["method"] in ("mse", "rtn"):
        return ", ".join(tuning) or "-"
    opts = [f"{k}={v}" for k, v in settings["options"].items()]
    return ", ".join(tuning + opts) or "defaults"


TIMING_PREFIX = "timing-"


def _runs(
    timing: bool, eval_text: str | None = None
) -> list[tuple[str, dict, list[dict]]]:
    """(name, settings, cells) of the timing runs (named ``timing-*``) or of
    the other runs evaluated on ``eval_text``; each cell carries ``cpu`` (its
    own record, else the CPU model the run was begun on)."""
    out = []
    for meta_path in sorted(RUNS.glob("*/run.json")):
        name = meta_path.parent.name
        meta = json.loads(meta_path.read_text())
        st = meta["settings"]
        if name.startswith(TIMING_PREFIX) != timing:
            continue
        if eval_text is not None and st.get("eval_text") != eval_text:
            continue
        began = meta.get("machine", {}).get("cpu")
        cells = [{"cpu": began, **c} for c in load_cells(meta_path.parent)]
        out.append((name, st, cells))
    return out


def sweep_table(
    main_settings: dict, eval_text: str = "validation", exclude: tuple[str, ...] = ()
) -> list[str]:
    """Every cell of the runs evaluated on ``eval_text`` (the validation split:
    the tuning of the defaults; the held-out text: option variants beside the
    main run ``exclude``), with its disagreement relative to mse of the same
    scheme, seed, model and tuning settings from a run of that text without
    options, on the same CPU model (another one rounds differently: another
    draw of the noise; tuning settings other than ``main_settings``' are named
    in the row); runs named in ``exclude`` are left out (the main run, and the
    runs with a section of their own)."""
    rows, mse = [], {}
    for name, st, cells in _runs(timing=False, eval_text=eval_text):
        setting = tuple(st[k] for k in TUNING_KEYS) + (
            st["eval_tokens"],
            st.get("model"),
        )
        for c in cells:
            if c["method"] == "mse" and not st["options"]:
                mse.setdefault((c["scheme"], c["seed"], setting, c["cpu"]), c)
            if name not in exclude:
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
        base = mse.get((c["scheme"], c["seed"], setting, c["cpu"]))
        ratio = f"{dis(c) / dis(base):.2f}x" if base else "-"
        opts = _options(st, c, main_settings)
        lines.append(
            f"| `{name}` | {c['scheme']} | {c['seed']} | {c['method']} | {opts} "
            f"| {dis(c):.4f} | {ratio} | {ppl(c):.3f} | {kl(c):.5f} |"
        )
    return lines


def timing_table() -> list[str]:
    """Quantization time of the runs named ``timing-*``: one cell at a time
    (``--jobs 1``), so the cells of one run are comparable; ratios to the mse
    cell of the same run, scheme and seed (else of another timing run of the same
    model, scheme and seed: a run of variants only)."""
    rows, mse, mse_any = [], {}, {}
    for name, st, cells in _runs(timing=True):
        for c in cells:
            rows.append((name, st, c))
            if c["method"] == "mse":
                mse[(name, c["scheme"], c["seed"])] = c
                mse_any.setdefault((st.get("model"), c["scheme"], c["seed"]), c)
    if not rows:
        return []
    lines = [
        "| run | scheme | seed | method | options | quantization wall s | CPU s "
        "| wall vs mse | CPU vs mse | peak RSS MB |",
        "|" + "---|" * 10,
    ]
    rows.sort(key=lambda r: (r[2]["scheme"], r[2]["seed"], r[2]["method"], r[0]))
    for name, st, c in rows:
        base = mse.get((name, c["scheme"], c["seed"])) or mse_any.get(
            (st.get("model"), c["scheme"], c["seed"])
        )
        opts = _options(st, c)
        wall = f"{qtime(c) / qtime(base):.2f}x" if base else "-"
        cpu = f"{qcpu(c) / qcpu(base):.2f}x" if base else "-"
        lines.append(
            f"| `{name}` | {c['scheme']} | {c['seed']} | {c['method']} | {opts} "
            f"| {qtime(c):.1f} | {qcpu(c):.1f} | {wall} | {cpu} "
            f"| {c['peak_rss_mb']:.0f} |"
        )
    return lines
