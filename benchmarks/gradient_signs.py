"""What each routing term tells SignSGD: per-element gradient signs at one block.

AutoRound updates every rounding value by ``-lr * sign(gradient)``, so a routing
term changes the quantized weights only where it flips the sign of the host
loss's gradient, and it helps only if those flips point the same way from one
calibration batch to the next. This script measures both, for each term, at the
round-to-nearest weights of one decoder layer of the shipped model:

- ``split-half``: sign agreement of the term's gradient summed over the first half
  of the batches with the one summed over the second half (0.5: noise, 1: the same
  direction on any data);
- ``reach``: share of elements with a non-zero gradient;
- ``flips``: share of elements where the term, scaled as ``BlockObjective`` scales it
  (lambda = 1: equal to the host loss at the start), flips the host gradient's sign
  in a batch; ``flips kept``: of those, the share whose flipped sign agrees with the
  term's gradient summed over the other half of the batches (0.5: the flips are
  noise).

Gradients are taken with respect to the dequantized weights (the rounding values'
gradient has the same sign: w_q = s * (round(w / s + v)) moves with v), attention
and experts reported apart: the layer's own router sees only attention weights,
the look-ahead router (next layer) also the experts. Inputs are the full-precision
model's, from calibration windows of the calibration split (never held-out).

    python benchmarks/gradient_signs.py --layer 2 --bits 3 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vsraq_modifier.calibration import (  # noqa: E402
    calibration_samples,
    split_tokens,
    text_token_ids,
)
from vsraq_modifier.config import VSRAQConfig  # noqa: E402
from vsraq_modifier.data import calibration_text_path, shipped_model_dir  # noqa: E402
from vsraq_modifier.lookahead import next_router_path  # noqa: E402
from vsraq_modifier.objective import RouterPair, routing_terms  # noqa: E402
from vsraq_modifier.objective.combine import term_weights  # noqa: E402
from vsraq_modifier.routers import find_routers  # noqa: E402
from vsraq_modifier.routers.base import decoder_layers  # noqa: E402

#: term name -> (config, name of the raw term routing_terms returns)
V = {"structure_weight": 0.0}  # value term alone
S = {"value_weight": 0.0, "structure_weight": 1.0}  # structure term alone
FLAT = {"temperature": 10.0}  # sensitivity weights ~ uniform (margins are < 1)
TERMS: dict[str, tuple[VSRAQConfig, str]] = {
    "value, logits (default)": (VSRAQConfig(**V, value_target="logits"), "value"),
    "value, scores": (VSRAQConfig(**V, value_target="scores"), "value"),
    "value, both (old default)": (VSRAQConfig(**V, value_target="both"), "value"),
    "value, logits, flat weights": (
        VSRAQConfig(**V, **FLAT, value_target="logits"),
        "value",
    ),
    "value, both, flat weights": (
        VSRAQConfig(**V, **FLAT, value_target="both"),
        "value",
    ),
    "structure, margin (default)": (VSRAQConfig(**S), "structure"),
    "structure, margin, flat weights": (VSRAQConfig(**S, **FLAT), "structure"),
    "structure, set_nll": (VSRAQConfig(**S, structure="set_nll"), "structure"),
    "topk_mse": (VSRAQConfig(loss="topk_mse"), "topk_mse"),
    "router_kl": (VSRAQConfig(loss="router_kl"), "router_kl"),
}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class _Stop(Exception):
    pass


def rtn_(w: torch.Tensor, bits: int, group: int) -> None:
    """Symmetric round-to-nearest in place, groups along the last (input) dim."""
    shape = w.shape
    g = min(group, shape[-1])
    x = w.reshape(-1, g)
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / (qmax + 0.5)
    q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
    w.copy_(q.reshape(shape))


def layer_inputs(
    model: nn.Module, layer: nn.Module, ids: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The full-precision hidden states and keyword arguments ``layer`` gets."""
    got: dict[str, Any] = {}

    def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        got["h"] = args[0] if args else kwargs.pop("hidden_states")
        got["kw"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    kw = {k: v for k, v in got["kw"].items() if k not in ("past_key_values",)}
    return got["h"].detach(), kw


def flat_grads(params: dict[str, list[nn.Parameter]]) -> dict[str, torch.Tensor]:
    out = {}
    for group, ps in params.items():
        out[group] = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                for p in ps
            ]
        ).clone()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--batches", type=int, default=8, help="even; split in halves")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--term",
        action="append",
        default=[],
        metavar="NAME=OPTIONS",
        help="an extra term, e.g. 'tau 0.3=value_weight:1,structure_weight:0,"
        "temperature:0.3' (VSRAQConfig options; the term measured is the config's "
        "first one with a non-zero weight)",
    )
    args = ap.parse_args(argv)
    terms = dict(TERMS)
    for spec in args.term:
        name, _, opts = spec.partition("=")
        kv = dict(o.split(":", 1) for o in opts.split(",") if o)
        config = VSRAQConfig(**{k: _value(v) for k, v in kv.items()})
        key = next(iter(term_weights(config)))
        if config.loss == "vsraq" and config.value_weight == 0:
            key = "structure"
        terms[name] = (config, key)
    if args.batches < 2 or args.batches % 2:
        ap.error("--batches must be an even number >= 2")
    torch.manual_seed(args.seed)
    from transformers import AutoModelForCausalLM

    model_dir = shipped_model_dir()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval().requires_grad_(False)
    ids = split_tokens(
        text_token_ids(calibration_text_path(), model_dir), "calibration"
    )
    samples = calibration_samples(
        ids,
        nsamples=args.batches * args.batch_size,
        seqlen=args.seqlen,
        seed=args.seed,
    )
    layers = decoder_layers(model)
    sites = find_routers(model)
    own = next(s for s in sites if s.layer == args.layer)
    path = next_router_path(layers, sites, args.layer)
    fp_layer = layers[args.layer]
    q_layer = copy.deepcopy(fp_layer)
    q_router = dict(q_layer.named_modules())[own.name]
    groups: dict[str, list[nn.Parameter]] = {"attention": [], "experts": []}
    for name, p in q_layer.named_parameters():
        if p.dim() < 2 or name == f"{own.name}.weight":
            continue  # norms and the router stay in full precision (as in AutoRound)
        with torch.no_grad():
            rtn_(p, args.bits, args.group)
        p.requires_grad_(True)
        groups["experts" if "experts" in name else "attention"].append(p)

    def logits_of(layer: nn.Module, router: nn.Module, h: torch.Tensor, kw: dict):
        got: dict[str, torch.Tensor] = {}
        handle = router.register_forward_hook(
            lambda _m, _a, out: got.__setitem__("z", own.logits(out))
        )
        try:
            out = layer(h, **kw)
        finally:
            handle.remove()
        out = out[0] if isinstance(out, tuple) else out
        return out, got["z"]

    names = ["host", *terms]
    grads: dict[str, list[dict[str, torch.Tensor]]] = {n: [] for n in names}
    values: dict[str, list[float]] = {n: [] for n in names}
    for b in range(args.batches):
        batch = torch.cat(samples[b * args.batch_size : (b + 1) * args.batch_size])
        h, kw = layer_inputs(model, fp_layer, batch)
        with torch.no_grad():
            ref_out, ref_z = logits_of(fp_layer, own.router, h, kw)
            ref_ahead = path(ref_out, **kw) if path is not None else None
        out, z = logits_of(q_layer, q_router, h, kw)
        ahead = path(out, **kw) if path is not None else None
        pairs = [RouterPair(z, ref_z, own.spec)]
        if ahead is not None:
            pairs.append(RouterPair(ahead, ref_ahead, path.site.spec))
        losses = {"host": torch.nn.functional.mse_loss(out, ref_out)}
        for term, (config, key) in terms.items():
            losses[term] = sum(routing_terms(p, config)[key] for p in pairs) / len(
                pairs
            )
        for i, (term, loss) in enumerate(losses.items()):
            for ps in groups.values():
                for p in ps:
                    p.grad = None
            loss.backward(retain_graph=i < len(losses) - 1)
            grads[term].append(flat_grads(groups))
            values[term].append(float(loss.detach()))
        print(f"batch {b + 1}/{args.batches}", file=sys.stderr)

    half = args.batches // 2
    result: dict[str, Any] = {"settings": vars(args) | {"json": str(args.json)}}
    rows = []
    for term in names:
        row: dict[str, Any] = {
            "term": term,
            "value": sum(values[term]) / len(values[term]),
        }
        for group in groups:
            gs = [g[group] for g in grads[term]]
            a, b = sum(gs[:half]), sum(gs[half:])
            live = (a != 0) & (b != 0)
            agree = ((a.sign() == b.sign()) & live).sum() / live.sum().clamp_min(1)
            reach = torch.stack([g != 0 for g in gs]).any(0).float().mean()
            row[f"{group} split-half"] = float(agree)
            row[f"{group} reach"] = float(reach)
            if term == "host":
                continue
            flips, kept = 0.0, 0.0
            for j in range(args.batches):
                host_g = grads["host"][j][group]
                scale = values["host"][j] / max(values[term][j], 1e-30)
                total = host_g + scale * gs[j]
                flipped = (total.sign() != host_g.sign()) & (gs[j] != 0)
                other = b if j < half else a
                flips += float(flipped.float().mean())
                good = (gs[j].sign() == other.sign()) & flipped
                kept += float(good.sum() / flipped.sum().clamp_min(1))
            row[f"{group} flips"] = flips / args.batches
            row[f"{group} flips kept"] = kept / args.batches
        rows.append(row)
    result["terms"] = rows
    cols = ["split-half", "reach", "flips", "flips kept"]
    print(
        f"layer {args.layer}, int{args.bits} g{args.group} RTN, "
        f"{args.batches} x {args.batch_size} x {args.seqlen} tokens"
    )
    header = "| term | " + " | ".join(f"{g} {c}" for g in groups for c in cols) + " |"
    print(header)
    print("|" + "---|" * (1 + len(groups) * len(cols)))
    for row in rows:
        cells = [
            f"{row[f'{g} {c}']:.3f}" if f"{g} {c}" in row else "-"
            for g in groups
            for c in cols
        ]
        print(f"| {row['term']} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
