"""The router re-fit variants on tiny random models of the sigmoid-router families
(DeepSeek-V3 style), where no trained model exists: ``python
benchmarks/refit_sweep.py --tiny deepseek_v3`` runs :func:`tiny_sweep`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vsraq_modifier.refit import RefitOptions

HERE = Path(__file__).resolve().parent

#: variants for sigmoid routers: the tiny random models (--tiny) and the shipped
#: DeepSeek-V3-style model (refit_sweep.py --model deepseek_v3)
SIGMOID_VARIANTS: dict[str, dict] = {"none": {"method": "none"}}
for _r in (1e-3, 1e-2):
    SIGMOID_VARIANTS[f"logits-uniform-{_r:g}"] = {"target": "logits", "ridge": _r}
    SIGMOID_VARIANTS[f"sigmoid-uniform-{_r:g}"] = {"target": "sigmoid", "ridge": _r}
    SIGMOID_VARIANTS[f"sigmoid-uniform-{_r:g}-gn3"] = {
        "target": "sigmoid",
        "ridge": _r,
        "iters": 3,
    }
    SIGMOID_VARIANTS[f"sigmoid-uniform-{_r:g}-corrbias"] = {
        "target": "sigmoid",
        "ridge": _r,
        "correction_bias": True,
    }
    SIGMOID_VARIANTS[f"sigmoid-boundary-{_r:g}"] = {
        "target": "sigmoid",
        "ridge": _r,
        "weights": "boundary",
    }


def fake_quantize(model, bits: int = 3, group: int = 16) -> None:
    """Symmetric round-to-nearest of every weight matrix but the routers,
    embeddings and norms (in place), groups of ``group`` along the input."""
    skip = ("embed", "lm_head", "mlp.gate.", "mlp.router.", "norm")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim < 2 or any(k in name for k in skip):
                continue
            w = p.reshape(-1, group)
            q = 2 ** (bits - 1) - 1
            scale = w.abs().amax(-1, keepdim=True).clamp_min(1e-8) / q
            p.copy_(((w / scale).round().clamp(-q - 1, q) * scale).reshape(p.shape))


def _tiny_pair(family: str, seed: int):
    import copy

    from vsraq_modifier.routers import find_routers
    from vsraq_modifier.testing import tiny_model

    reference = tiny_model(family, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for site in find_routers(reference):  # routers with preferences, a real bias
        with torch.no_grad():
            site.router.weight.mul_(4.0)
            bias = getattr(site.router, "e_score_correction_bias", None)
            if bias is not None:
                bias.copy_(0.05 * torch.randn(bias.shape, generator=g))
    quantized = copy.deepcopy(reference)
    fake_quantize(quantized)
    vocab = reference.config.vocab_size
    cal = torch.randint(2, vocab, (32, 64), generator=g)
    val = torch.randint(2, vocab, (32, 64), generator=g)
    return reference, quantized, list(cal.split(8)), list(val.split(8))


def tiny_sweep(family: str, threads: int, only_table: bool) -> int:
    from vsraq_modifier.metrics.agreement import RoutingAccumulator
    from vsraq_modifier.metrics.hooks import RoutingCapture
    from vsraq_modifier.refit.model import refit_routers
    from vsraq_modifier.routers import find_routers

    out = HERE / "runs" / f"refit-tiny-{family}"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    for seed in (0, 1, 2) if not only_table else ():
        todo = [
            v for v in SIGMOID_VARIANTS if not (out / f"{v}__s{seed}.json").exists()
        ]
        for v in todo:
            reference, quantized, cal, val = _tiny_pair(family, seed)
            opts = RefitOptions(
                **{"method": "ridge", "refit_all": False, **SIGMOID_VARIANTS[v]}
            )
            res = (
                []
                if opts.method == "none"
                else refit_routers(reference, quantized, cal, opts, progress=False)
            )
            acc = RoutingAccumulator()
            for ids in val:
                with torch.no_grad():
                    with RoutingCapture(find_routers(reference)) as a:
                        reference(input_ids=ids)
                    with RoutingCapture(find_routers(quantized)) as b:
                        quantized(input_ids=ids)
                for layer, r in a.routings.items():
                    acc.update(layer, r, b.routings[layer])
            j = [m.jaccard for m in acc.result()]
            rec = {
                "variant": v,
                "options": SIGMOID_VARIANTS[v],
                "seed": seed,
                "mean_jaccard": sum(j) / len(j),
                "jaccard": j,
                "kept": [r.accepted for _, r in res],
            }
            (out / f"{v}__s{seed}.json").write_text(json.dumps(rec, indent=1))
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*__s*.json"))]
    base = {r["seed"]: 1 - r["mean_jaccard"] for r in recs if r["variant"] == "none"}
    lines = [
        "| variant | disagreement / none, per seed | routers kept |",
        "|---|---|---|",
    ]
    for v in SIGMOID_VARIANTS:
        rs = sorted((r for r in recs if r["variant"] == v), key=lambda r: r["seed"])
        ratios = " ".join(
            f"{(1 - r['mean_jaccard']) / base[r['seed']]:.2f}x"
            for r in rs
            if r["seed"] in base
        )
        kept = sum(sum(r["kept"]) for r in rs), sum(len(r["kept"]) for r in rs)
        lines.append(f"| {v} | {ratios} | {kept[0]}/{kept[1]} |")
    print("\n".join(lines))
    return 0
