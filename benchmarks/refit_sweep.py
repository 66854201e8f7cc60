"""Router re-fit variants on a shipped MoE, measured on the validation split.

Quantizes a shipped model (the first by default; ``--model deepseek_v3``: the
sigmoid-router one, with the sigmoid variants) with the project's runner
(``quantize_checkpoint``: AutoRound SignRound; small settings, see --help),
then, per checkpoint and per fit variant (target, weights, ridge, safeguard),
re-fits the routers in model order exactly as ``vsraq refit`` does
(``refit_routers``, on the quantization's own calibration windows) and measures
routing agreement, KL and perplexity against the full-precision model on the
validation split of the calibration text (never the held-out text). One JSON
file per (variant, checkpoint) under ``benchmarks/runs/refit-<id>/``; existing
files are skipped (resumable).

    nice -n 10 python benchmarks/refit_sweep.py
    python benchmarks/refit_sweep.py --table      # the docs/refit.md table
    nice -n 10 python benchmarks/refit_sweep.py --model deepseek_v3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from refit_tiny import SIGMOID_VARIANTS, tiny_sweep  # noqa: E402

from vsraq_modifier.refit import RefitOptions  # noqa: E402

#: variant name -> RefitOptions fields (method ridge unless "none")
VARIANTS: dict[str, dict] = {"none": {"method": "none"}}
for _r in (1e-4, 1e-3, 1e-2, 1e-1):
    VARIANTS[f"centred-uniform-{_r:g}"] = {"target": "centred", "ridge": _r}
# uniform weights: the centred solution is the logits one minus a shared shift per
# token (softmax cannot see it), so one logits row shows the two route the same
VARIANTS["logits-uniform-0.001"] = {"target": "logits", "ridge": 1e-3}
for _r in (1e-3, 1e-2, 1e-1):
    VARIANTS[f"centred-boundary-{_r:g}"] = {
        "target": "centred",
        "weights": "boundary",
        "ridge": _r,
    }
for _r in (1e-4, 1e-3, 1e-2):
    VARIANTS[f"centred-uniform-{_r:g}-refitall"] = {
        "target": "centred",
        "ridge": _r,
        "refit_all": True,
    }
for _rho in (1.0, 0.1):
    VARIANTS[f"centred-uniform-0.001-margin{_rho:g}"] = {
        "target": "centred",
        "ridge": 1e-3,
        "refine": 20,
        "refine_weight": _rho,
    }
for _r in (1e-3, 1e-2):
    VARIANTS[f"centred-uniform-{_r:g}-nosafeguard"] = {
        "target": "centred",
        "ridge": _r,
        "holdout": 0.0,
    }


#: the sigmoid-router model's variants: the tiny models' ones, the in-loop form
#: (refit_all) and the unguarded logits fit whose error share is the linearly
#: correctable part of the router-logit error
SIGMOID_SWEEP: dict[str, dict] = {
    **SIGMOID_VARIANTS,
    "sigmoid-uniform-0.001-refitall": {
        "target": "sigmoid",
        "ridge": 1e-3,
        "refit_all": True,
    },
    "logits-uniform-0.001-nosafeguard": {
        "target": "logits",
        "ridge": 1e-3,
        "holdout": 0.0,
    },
}
#: the variant whose fit error gives the linearly correctable share, per family
SHARE_VARIANT = {
    "softmax": "centred-uniform-0.001-nosafeguard",
    "sigmoid": "logits-uniform-0.001-nosafeguard",
}


def variants_for(score_fn: str) -> dict[str, dict]:
    """The sweep's variants for a router family (its ``RouterSpec.score_fn``)."""
    return SIGMOID_SWEEP if score_fn == "sigmoid" else VARIANTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = ap.add_argument
    a("--methods", nargs="+", default=["rtn", "mse"], help="default rtn mse")
    a("--schemes", nargs="+", default=["W4A16", "W3A16"], help="default W4A16 W3A16")
    a(
        "--model",
        default=None,
        help="a shipped model's name (qwen3_moe, deepseek_v3); default the first",
    )
    a(
        "--variants",
        nargs="+",
        default=None,
        choices=list({**VARIANTS, **SIGMOID_SWEEP}),
        metavar="VARIANT",
        help="default: every variant of the model's router family (VARIANTS, "
        "or SIGMOID_SWEEP for sigmoid routers, in this file)",
    )
    a("--seed", type=int, default=0, help="quantization seed and windows (default 0)")
    a("--iters", type=int, default=40, help="SignRound iterations (default 40)")
    a("--nsamples", type=int, default=32, help="calibration windows (default 32)")
    a("--seqlen", type=int, default=256, help="tokens per window (default 256)")
    a("--threads", type=int, default=1, help="torch threads (default 1)")
    a("--table", action="store_true", help="print the results table and exit")
    a(
        "--tiny",
        metavar="FAMILY",
        default=None,
        help="instead: tiny random models of FAMILY (e.g. deepseek_v3), 3-bit "
        "round-to-nearest weights, random token ids, seeds 0-2 (correctness, not a "
        "measurement of a trained model)",
    )
    return ap.parse_args(argv)


def run_dir(args: argparse.Namespace) -> Path:
    model = f"-{args.model}" if args.model not in (None, "qwen3_moe") else ""
    return (
        HERE
        / "runs"
        / f"refit-it{args.iters}-n{args.nsamples}x{args.seqlen}-s{args.seed}{model}"
    )


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _checkpoint(
    args, model_dir: Path, out: Path, method: str, scheme: str, samples
) -> dict:
    from vsraq_modifier.runs import quantize_checkpoint

    meta = out.parent.parent / f"ckpt__{method}__{scheme}.json"
    if out.exists() and meta.exists():
        return json.loads(meta.read_text())
    cpu = _cpu()
    q = quantize_checkpoint(
        model_dir,
        out,
        method=method,
        scheme=scheme,
        dataset=samples,
        seed=args.seed,
        iters=args.iters,
    )
    info = {
        "method": method,
        "scheme": scheme,
        "seconds": q.seconds,
        "cpu_seconds": _cpu() - cpu,
        "settings": q.settings,
    }
    meta.write_text(json.dumps(info, indent=1))
    return info


def _chunks(ids: torch.Tensor, seqlen: int, size: int = 8) -> list[torch.Tensor]:
    n = ids.numel() // seqlen
    rows = ids[: n * seqlen].reshape(n, seqlen)
    return list(rows.split(size))


def _evaluate(reference, quantized, batches, ref_cache: dict) -> dict:
    """Per-layer Jaccard, KL(ref || q) and perplexity on the validation chunks."""
    from vsraq_modifier.metrics.agreement import RoutingAccumulator
    from vsraq_modifier.metrics.hooks import RoutingCapture
    from vsraq_modifier.routers import find_routers

    acc, kl, nll, count = RoutingAccumulator(), 0.0, 0.0, 0
    ref_sites, q_sites = find_routers(reference), find_routers(quantized)
    for i, ids in enumerate(batches):
        with torch.no_grad():
            if i not in ref_cache:
                with RoutingCapture(ref_sites) as cap:
                    lp = torch.log_softmax(reference(input_ids=ids).logits.float(), -1)
                ref_cache[i] = (lp, cap.routings)
            ref_lp, ref_routing = ref_cache[i]
            with RoutingCapture(q_sites) as cap:
                q_lp = torch.log_softmax(quantized(input_ids=ids).logits.float(), -1)
        for layer, r in ref_routing.items():
            acc.update(layer, r, cap.routings[layer])
        a, b = ref_lp[:, :-1], q_lp[:, :-1]
        kl += float((a.exp() * (a - b)).sum())
        nll += float(-b.gather(-1, ids[:, 1:, None]).sum())
        count += a.shape[0] * a.shape[1]
    layers = {m.layer: m.jaccard for m in acc.result()}
    mean_j = sum(layers.values()) / len(layers)
    return {
        "jaccard": layers,
        "mean_jaccard": mean_j,
        "disagreement": 1 - mean_j,
        "kl": kl / count,
        "perplexity": math.exp(nll / count),
        "tokens": count,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tiny:
        return tiny_sweep(args.tiny, args.threads, args.table)
    out = run_dir(args)
    if args.table:
        print(table(out))
        return 0
    torch.set_num_threads(args.threads)
    from vsraq_modifier import data
    from vsraq_modifier.calibration import (
        calibration_samples,
        split_tokens,
        text_token_ids,
    )
    from vsraq_modifier.metrics.loading import load_model
    from vsraq_modifier.refit.model import batches, refit_routers

    (out / "work").mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("seed", "iters", "nsamples", "seqlen")}
    rj = out / "run.json"
    if rj.exists() and json.loads(rj.read_text())["settings"] != settings:
        raise SystemExit(f"{rj}: other settings; choose another run directory")
    rj.write_text(
        json.dumps(
            {"settings": settings, "command": " ".join(sys.argv), "variants": VARIANTS},
            indent=1,
        )
    )
    model_dir = data.shipped_model_dir(args.model or "qwen3_moe")
    ids = text_token_ids(data.calibration_text_path(), model_dir)
    samples = calibration_samples(
        split_tokens(ids, "calibration"),
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        seed=args.seed,
    )
    val = _chunks(split_tokens(ids, "validation"), 256)
    reference = load_model(model_dir, dtype="float32").model
    from vsraq_modifier.routers import find_routers

    score_fn = find_routers(reference)[0].spec.score_fn
    family = variants_for(score_fn)
    other = [v for v in args.variants or () if v not in family]
    if other:
        raise SystemExit(
            f"--variants {' '.join(other)}: not variants for this model's "
            f"{score_fn} routers; choose from {' '.join(family)}"
        )
    variants = list(args.variants or family)
    ref_cache: dict = {}
    for scheme in args.schemes:
        for method in args.methods:
            ck = out / "work" / f"{method}__{scheme}"
            info = _checkpoint(args, model_dir, ck, method, scheme, samples)
            todo = [
                v
                for v in variants
                if not (out / f"{v}__{method}__{scheme}.json").exists()
            ]
            if not todo:
                continue
            quantized = load_model(ck, dtype="float32").model
            sites = find_routers(quantized)
            original = {s.layer: s.router.weight.detach().clone() for s in sites}
            for v in todo:
                with torch.no_grad():
                    for s in sites:
                        s.router.weight.copy_(original[s.layer])
                opts = RefitOptions(
                    **{"method": "ridge", "refit_all": False, **family[v]}
                )
                t0, c0 = time.perf_counter(), _cpu()
                routers = []
                if opts.method != "none":
                    res = refit_routers(
                        reference,
                        quantized,
                        batches(samples, 8, "cpu"),
                        opts,
                        progress=False,
                    )
                    routers = [
                        {
                            "layer": s.layer,
                            "accepted": r.accepted,
                            "fit_error": [r.fit_error_before, r.fit_error_after],
                            "held_jaccard": [r.agreement_before, r.agreement_after],
                        }
                        for s, r in res
                    ]
                fit_s, fit_cpu = time.perf_counter() - t0, _cpu() - c0
                ev = _evaluate(reference, quantized, val, ref_cache)
                rec = {
                    "variant": v,
                    "options": family[v],
                    "method": method,
                    "scheme": scheme,
                    "checkpoint": info,
                    "routers": routers,
                    "fit_seconds": fit_s,
                    "fit_cpu_seconds": fit_cpu,
                    "validation": ev,
                }
                tmp = out / f"{v}__{method}__{scheme}.json.tmp"
                tmp.write_text(json.dumps(rec, indent=1))
                tmp.rename(out / f"{v}__{method}__{scheme}.json")
                print(
                    f"{scheme} {method} {v}: disagreement "
                    f"{ev['disagreement']:.4f} kl {ev['kl']:.5f} "
                    f"ppl {ev['perplexity']:.3f} fit {fit_s:.1f}s",
                    flush=True,
                )
    print(table(out))
    return 0


def table(out: Path) -> str:
    """Markdown: per variant and checkpoint, validation disagreement as a ratio to
    the same checkpoint without re-fit (and routers kept re-fitted)."""
    recs = [
        json.loads(p.read_text())
        for p in sorted(out.glob("*__*__*.json"))
        if not p.name.startswith("ckpt__")
    ]
    base = {
        (r["method"], r["scheme"]): r["validation"]
        for r in recs
        if r["variant"] == "none"
    }
    cols = sorted({(r["scheme"], r["method"]) for r in recs}, reverse=True)
    head = "| variant | " + " | ".join(f"{s} {m}" for s, m in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    by = {(r["variant"], r["scheme"], r["method"]): r for r in recs}
    present = {r["variant"] for r in recs}
    for v in [v for v in {**VARIANTS, **SIGMOID_SWEEP} if v in present]:
        cells = []
        for s, m in cols:
            r = by.get((v, s, m))
            if r is None:
                cells.append("")
                continue
            ev, b = r["validation"], base.get((m, s))
            kept = sum(x["accepted"] for x in r["routers"])
            ratio = ev["disagreement"] / b["disagreement"] if b else float("nan")
            extra = f" ({kept}/{len(r['routers'])})" if r["routers"] else ""
            dkl = (ev["kl"] / b["kl"] - 1) * 100 if b else float("nan")
            cells.append(
                f"{ev['disagreement']:.4f} = {ratio:.2f}x, KL {dkl:+.0f}%{extra}"
            )
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    # share of the router-logit error (centred for softmax routers) that the linear
    # fit removes, per router, on the calibration tokens it was fitted on (all of
    # them, no holdout)
    share = next((v for v in SHARE_VARIANT.values() if v in present), None)
    if share is None:
        return "\n".join(lines)
    lines += [
        "",
        "| checkpoint | linearly removed share of the router-logit error, "
        f"layers 0.. ({share}, calibration tokens) |",
        "|---|---|",
    ]
    for s, m in cols:
        r = by.get((share, s, m))
        if r:
            shares = [1 - x["fit_error"][1] / x["fit_error"][0] for x in r["routers"]]
            lines.append(f"| {s} {m} | " + " ".join(f"{v:.2f}" for v in shares) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
