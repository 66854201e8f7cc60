"""Benchmark of ``vsraq allocate`` on the shipped model: this allocation vs uniform
schemes vs AutoScheme vs the same allocation without domain balance (MODE ablation:
domains weighted by their token counts, i.e. pooled), at equal average bits, each
quantized by AutoRound with its own loss (mse) and, with ``--methods``, with the
VSRAQ loss (``vsraq``) and with it plus the in-loop router re-fit
(``vsraq_refit``, ``router_refit=ridge``); ``--seeds`` repeats each quantization
with other seeds (calibration windows, AutoRound's seed). The allocation itself
is measured once: it does not depend on the seed.

Resumable: every step writes one JSON under ``benchmarks/runs/allocate-<id>/`` and
is skipped when its file exists. Steps (``--only`` picks some):

- ``reference``: full-precision perplexity per held-out domain;
- ``measure``: the allocation's sensitivity measurement (CPU seconds recorded);
- ``q-<variant>``: quantize (AutoRound, ``--iters``), reload, evaluate on the
  held-out text per domain (perplexity, KL, routing disagreement 1 - Jaccard).
  Variants: ``uniform-<scheme>``, ``alloc-<bits>``, ``freq-<bits>``,
  ``autoscheme-<bits>``, ``ealloc-<bits>``, ``efreq-<bits>``; a method other
  than mse adds ``+<method>`` and a seed other than 0 ``+s<seed>``
  (``q-alloc-3.0+vsraq_refit+s1``; ``@`` is taken by scheme labels such as
  ``W4A16@64``), so the mse seed-0 steps keep their names.

    nice -n 10 python benchmarks/allocate_bench.py            # everything (mse, seed 0)
    nice -n 10 python benchmarks/allocate_bench.py --only q-autoscheme-3.0
    nice -n 10 python benchmarks/allocate_bench.py --methods mse,vsraq,vsraq_refit \
        --seeds 0,1,2                              # the other losses, 3 seeds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from allocate_report import report, stored_measurement, summary  # noqa: E402

SCHEMES = "W2A16G64,W4A16@64"
BUDGETS = (3.0, 2.5)
#: quantizers of each allocation (vsraq_modifier/runs.py's METHODS)
QUANTIZERS = ("mse", "vsraq", "vsraq_refit")


def split_step(variant: str) -> tuple[str, str, int]:
    """``alloc-3.0+vsraq+s1`` -> (``alloc-3.0``, ``vsraq``, 1); mse and seed 0 are
    the defaults and left out of the name."""
    base, *tags = variant.split("+")
    method, seed = "mse", 0
    for t in tags:
        if t[:1] == "s" and t[1:].isdigit():
            seed = int(t[1:])
        elif t in QUANTIZERS and t != "mse":
            method = t
        else:
            raise SystemExit(
                f"step q-{variant}: unknown tag {t!r} (a method of "
                f"{', '.join(QUANTIZERS[1:])}, or s<seed>)"
            )
    return base, method, seed


def step_name(variant: str, method: str, seed: int) -> str:
    """The inverse of :func:`split_step`."""
    tags = ([f"+{method}"] if method != "mse" else []) + (
        [f"+s{seed}"] if seed else []
    )
    return f"q-{variant}" + "".join(tags)


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.rename(path)


def _model_dir() -> Path:
    from vsraq_modifier import data

    return data.shipped_model_dir()


def _load_fp():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(_model_dir()), dtype=torch.float32
    ).eval()


def _heldout(args) -> dict[str, Any]:
    """Held-out token ids per domain (first --eval-tokens of each)."""
    from vsraq_modifier.allocate.domains import shipped_domains
    from vsraq_modifier.data import heldout_text_path
    from vsraq_modifier.metrics.loading import load_token_ids

    parts = shipped_domains(heldout_text_path().read_text(encoding="utf-8"), "heldout")
    out = {}
    work = Path(args.run) / "work"
    work.mkdir(parents=True, exist_ok=True)
    for name, text in parts.items():
        p = work / f"heldout-{name}.txt"
        p.write_text(text, encoding="utf-8")
        out[name] = load_token_ids(p, _model_dir(), args.eval_tokens)
    return out


def _calibration(args, seed: int = 0):
    from vsraq_modifier.calibration import (
        calibration_samples,
        split_tokens,
        text_token_ids,
    )
    from vsraq_modifier.data import calibration_text_path

    ids = split_tokens(
        text_token_ids(calibration_text_path(), _model_dir()), "calibration"
    )
    return calibration_samples(ids, nsamples=args.nsamples, seqlen=256, seed=seed)


def step_reference(args) -> dict[str, Any]:
    from vsraq_modifier.metrics.evaluate import evaluate_model

    model = _load_fp()
    out = {}
    for d, ids in _heldout(args).items():
        _, ppl = evaluate_model(model, model, ids, seq_len=256, progress=False)
        out[d] = {"perplexity": ppl, "tokens": int(ids.numel())}
    return {"domains": out}


def step_measure(args, mode: str = "layer") -> dict[str, Any]:
    from transformers import AutoTokenizer

    from vsraq_modifier.allocate.domains import load_domains
    from vsraq_modifier.allocate.pipeline import domain_chunks, plan
    from vsraq_modifier.allocate.schemes import parse_schemes
    from vsraq_modifier.allocate.sensitivity import measure

    model = _load_fp()
    schemes = parse_schemes(SCHEMES)
    units, _ = plan(model, schemes, mode, BUDGETS[0])
    tok = AutoTokenizer.from_pretrained(str(_model_dir()))
    tokens = args.max_tokens if mode == "layer" else args.max_tokens_expert
    chunks, available = domain_chunks(load_domains(None), tok, 256, tokens)
    cpu, wall = _cpu(), time.perf_counter()
    m = measure(model, units, schemes, chunks, progress=False)
    return {
        "cpu_seconds": _cpu() - cpu,
        "wall_seconds": time.perf_counter() - wall,
        "forward_passes": m.forward_passes,
        "units": m.units,
        "schemes": m.schemes,
        "domains": m.domains,
        "tokens": m.tokens,
        "available_tokens": available,
        "kl": m.kl.tolist(),
        "disagreement": m.disagreement.tolist(),
        "usage": {d: u.tolist() for d, u in m.usage.items()},
        "router_layers": m.router_layers,
    }


def _solve(
    run: Path, weights: str, bits: float, mode: str = "layer"
) -> tuple[dict[str, Any], float]:
    """layer_config of the allocation from the stored measurement, and solve time."""
    import numpy as np

    from vsraq_modifier.allocate.domains import domain_weights
    from vsraq_modifier.allocate.outputs import autoround_pattern
    from vsraq_modifier.allocate.pipeline import plan
    from vsraq_modifier.allocate.schemes import parse_schemes
    from vsraq_modifier.allocate.sensitivity import combine
    from vsraq_modifier.allocate.solve import solve
    from vsraq_modifier.allocate.units import ignored_linears

    name = "measure.json" if mode == "layer" else f"measure-{mode}.json"
    m = json.loads((run / name).read_text())
    meas = stored_measurement(m)
    start = time.perf_counter()
    model = _load_fp()
    schemes = parse_schemes(SCHEMES)
    units, costs = plan(model, schemes, mode, bits)
    w = domain_weights(weights, m["domains"], m["available_tokens"])
    sens, _, _ = combine(meas, w, None)
    sol = solve(sens.numpy(), costs, np.array([u.numel for u in units]), bits)
    seconds = time.perf_counter() - start
    lc = {}
    for u, c in zip(units, sol.choice):
        for p in u.patterns:
            lc[autoround_pattern(p)] = schemes[c].autoround()
    for name in ignored_linears(model):
        lc[f"^{name}$"] = {"bits": 16, "act_bits": 16, "data_type": "float"}
    chosen = {u.name: schemes[c].label for u, c in zip(units, sol.choice)}
    return {
        "layer_config": lc,
        "choice": chosen,
        "average_bits": sol.average_bits,
    }, seconds


def _evaluate(args, qdir: Path) -> dict[str, Any]:
    from vsraq_modifier.metrics.evaluate import evaluate_model
    from vsraq_modifier.metrics.loading import load_model

    ref = _load_fp()
    q = load_model(qdir).model
    out = {}
    for d, ids in _heldout(args).items():
        ev, ref_ppl = evaluate_model(ref, q, ids, seq_len=256, progress=False)
        jac = [layer.jaccard for layer in ev.layers]
        out[d] = {
            "perplexity": ev.perplexity,
            "reference_perplexity": ref_ppl,
            "kl": ev.kl,
            "disagreement": 1 - sum(jac) / len(jac),
            "tokens": int(ids.numel()),
        }
    n = sum(v["tokens"] - math.ceil(v["tokens"] / 256) for v in out.values())
    w = {d: (v["tokens"] - math.ceil(v["tokens"] / 256)) / n for d, v in out.items()}
    overall = {
        "perplexity": math.exp(
            sum(w[d] * math.log(v["perplexity"]) for d, v in out.items())
        ),
        "reference_perplexity": math.exp(
            sum(w[d] * math.log(v["reference_perplexity"]) for d, v in out.items())
        ),
        "kl": sum(w[d] * v["kl"] for d, v in out.items()),
        "disagreement": sum(w[d] * v["disagreement"] for d, v in out.items()),
    }
    return {"domains": out, "overall": overall}


def step_quantize(args, variant: str) -> dict[str, Any]:
    import torch
    from auto_round import AutoRound, AutoScheme
    from auto_round.auto_scheme.utils import compute_avg_bits_for_model
    from auto_round.schemes import QuantizationScheme
    from transformers import AutoTokenizer

    from vsraq_modifier.allocate.schemes import parse_schemes
    from vsraq_modifier.runs import METHODS

    run = Path(args.run)
    base, method, seed = split_step(variant)
    kind, _, arg = base.partition("-")
    schemes = parse_schemes(SCHEMES)
    info: dict[str, Any] = {"variant": base, "method": method, "seed": seed}
    layer_config, scheme = None, "W2A16G64"
    if kind == "uniform":
        s = next(s for s in schemes if s.label == arg)
        scheme = QuantizationScheme(**{**s.autoround(), "act_bits": 16})
    elif kind in ("alloc", "freq", "ealloc", "efreq"):
        weights = "equal" if kind.endswith("alloc") else "tokens"
        mode = "expert" if kind.startswith("e") else "layer"
        sol, secs = _solve(run, weights, float(arg), mode)
        layer_config = sol["layer_config"]
        info.update(
            choice=sol["choice"],
            solve_seconds=secs,
            planned_average_bits=sol["average_bits"],
        )
        twin_variant = kind.replace("freq", "alloc") + "-" + arg
        twin = run / f"{step_name(twin_variant, method, seed)}.json"
        if kind.endswith("freq") and twin.exists():
            done = json.loads(twin.read_text())
            if done["choice"] == sol["choice"]:  # same allocation: same checkpoint
                return {**done, **info, "same_as": twin.name}
    elif kind == "autoscheme":
        opts = [
            QuantizationScheme(**{**s.autoround(), "act_bits": 16}) for s in schemes
        ]
        # AutoScheme's search reads AutoRound's own dataset and takes only a name
        # or a local JSON file, not token ids: the same windows, decoded, serve as
        # this variant's dataset (search and tuning)
        tok = AutoTokenizer.from_pretrained(str(_model_dir()))
        texts = [{"text": tok.decode(x[0])} for x in _calibration(args, seed)]
        calib = run / "work" / f"autoscheme-calibration-s{seed}.json"
        calib.parent.mkdir(parents=True, exist_ok=True)
        calib.write_text(json.dumps(texts))
        scheme = AutoScheme(
            avg_bits=float(arg),
            options=opts,
            enable_torch_compile=False,
            nsamples=len(texts),
            seqlen=256,
            batch_size=8,
        )
    else:
        raise SystemExit(f"unknown variant {variant}")
    torch.manual_seed(seed)
    model = _load_fp()
    tok = AutoTokenizer.from_pretrained(str(_model_dir()))
    samples = _calibration(args, seed) if kind != "autoscheme" else str(calib)
    work = run / "work" / variant
    shutil.rmtree(work, ignore_errors=True)
    cpu, wall = _cpu(), time.perf_counter()
    common = dict(
        scheme=scheme,
        layer_config=layer_config,
        dataset=samples,
        nsamples=args.nsamples,
        seqlen=256,
        batch_size=8,
        iters=args.iters,
        seed=seed,
        device_map="cpu",
    )
    if method == "mse":  # plain AutoRound, no plugin code in the loop
        ar = AutoRound(model, tok, enable_torch_compile=False, **common)
    else:  # the VSRAQ loss (torch.compile is off in it)
        from vsraq_modifier.integrations.autoround import autoround

        ar = autoround(
            model, tok, staged=False, **dict(METHODS[method].options), **common
        )
    ar.quantize_and_save(str(work), format="fake")
    info["quantize_cpu_seconds"] = _cpu() - cpu
    info["quantize_wall_seconds"] = time.perf_counter() - wall
    # AutoScheme's own count over the quantized layers
    info["average_bits"] = float(compute_avg_bits_for_model(ar.model)[0])
    if kind == "autoscheme":
        info["choice"] = {
            n: f"W{c.get('bits')}G{c.get('group_size')}"
            for n, c in sorted(ar.layer_config.items())
            if c.get("bits", 16) < 16
        }
    del ar, model
    (qdir,) = sorted(p.parent for p in work.rglob("config.json"))
    info["eval"] = _evaluate(args, qdir)
    shutil.rmtree(work, ignore_errors=True)
    return info


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run",
        default=None,
        help="run directory (default: benchmarks/"
        "runs/allocate-it<iters>-n<nsamples>-e<eval-tokens>)",
    )
    p.add_argument("--iters", type=int, default=25, help="AutoRound iterations (25)")
    p.add_argument(
        "--nsamples",
        type=int,
        default=32,
        help="calibration samples of 256 tokens (32)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=2048,
        help="allocation: tokens measured per domain (2048)",
    )
    p.add_argument(
        "--max-tokens-expert",
        type=int,
        default=1024,
        help="per-expert allocation: tokens measured per domain (1024)",
    )
    p.add_argument(
        "--eval-tokens",
        type=int,
        default=4096,
        help="held-out tokens per domain (4096)",
    )
    p.add_argument(
        "--methods",
        default="mse",
        help="quantizers of every variant, comma-separated, of "
        f"{', '.join(QUANTIZERS)} (mse)",
    )
    p.add_argument(
        "--seeds",
        default="0",
        help="seeds of every quantization, comma-separated (0): the calibration "
        "windows and AutoRound's seed",
    )
    p.add_argument("--only", nargs="*", default=None, help="steps to run")
    p.add_argument(
        "--list",
        action="store_true",
        help="print the steps (done or to do) and exit",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="print the tables of the finished steps and exit",
    )
    args = p.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = sorted(set(methods) - set(QUANTIZERS))
    if bad or not methods:
        p.error(f"--methods {args.methods}: use some of {', '.join(QUANTIZERS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {args.seeds}: comma-separated integers, e.g. 0,1,2")
    if any(s < 0 for s in seeds):
        p.error(f"--seeds {args.seeds}: seeds must be >= 0")
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.run = args.run or str(
        ROOT
        / "benchmarks"
        / "runs"
        / f"allocate-it{args.iters}-n{args.nsamples}-e{args.eval_tokens}"
    )
    run = Path(args.run)
    if args.report:
        print(report(run))
        print("\nOver seeds, and the targets:\n")
        print(summary(run))
        return 0
    run.mkdir(parents=True, exist_ok=True)
    # AutoScheme first: its time on this model decides what else fits
    variants = [f"autoscheme-{BUDGETS[0]}"]
    variants += [f"uniform-{s}" for s in SCHEMES.split(",")]
    for b in BUDGETS:
        variants += [f"alloc-{b}", f"freq-{b}"]
    variants += [f"autoscheme-{b}" for b in BUDGETS[1:]]
    # per-expert units (not servable by vLLM's fused MoE): where domain balance
    # can matter, since all domains rank the layers alike
    expert = [f"ealloc-{BUDGETS[0]}", f"efreq-{BUDGETS[0]}"]

    def quantize(names: list[str]) -> list[str]:
        return [step_name(v, m, s) for s in seeds for m in methods for v in names]

    steps = ["reference", *quantize(variants[:1]), "measure", *quantize(variants[1:])]
    steps += ["measure-expert", *quantize(expert)]
    if args.list:
        for step in args.only or steps:
            done = (run / f"{step}.json").exists()
            print(f"{step}: {'done' if done else 'to do'}")
        return 0
    settings = {
        k: v
        for k, v in vars(args).items()
        if k not in ("only", "methods", "seeds", "list")
    }
    # every invocation's command is kept: --methods and --seeds add steps to the
    # same run, whose settings they do not change
    old = {}
    if (run / "run.json").exists():
        old = json.loads((run / "run.json").read_text())
    command = " ".join(sys.argv)
    commands = old.get("commands", [old["command"]] if "command" in old else [])
    if command not in commands:
        commands.append(command)
    (run / "run.json").write_text(
        json.dumps(
            {"settings": settings, "command": command, "commands": commands}, indent=1
        )
        + "\n"
    )
    for step in args.only or steps:
        path = run / f"{step}.json"
        if path.exists():
            print(f"{step}: done", flush=True)
            continue
        start = time.perf_counter()
        print(f"{step}: running", flush=True)
        if step == "reference":
            data = step_reference(args)
        elif step == "measure":
            data = step_measure(args)
        elif step == "measure-expert":
            data = step_measure(args, "expert")
        else:
            data = step_quantize(args, step.removeprefix("q-"))
        data["step_wall_seconds"] = time.perf_counter() - start
        _write(path, data)
        print(f"{step}: {data['step_wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
