"""Router statistics of the shipped MoE, and how much round-to-nearest quantization
moves its expert choices and its perplexity (and how much of that is routing).

- Router statistics on held-out text: mean top-1 probability per layer, quantiles
  of the k-th minus (k+1)-th selection-score margin, expert load (busiest expert's
  share over the mean share) and the dead experts.
- Round-to-nearest W4A16 g128 and W3A16 g128 (symmetric per-group, along each
  weight's input dimension, every layer quantized together): attention and all
  experts (transformers 5.17 fuses them into 3-D ``gate_up_proj`` [E, 2I, H] and
  ``down_proj`` [E, H, I]; the input dim is the last one of both). Routers,
  embeddings, norms and the (tied) lm_head stay in full precision.
- End to end, reference vs quantized each on its own activations
  (``vsraq_modifier.metrics.evaluate_model``): per-layer Jaccard, perplexity, KL,
  and the oracle perplexity (quantized model with the reference's expert choice);
  oracle share = (PPL_q - PPL_oracle) / (PPL_q - PPL_fp).

Usage::

    python scripts/model_stats.py [--model DIR] [--text FILE] [--tokens 65536]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vsraq_modifier.metrics import RoutingCapture, chunk_token_ids, evaluate_model  # noqa: E402
from vsraq_modifier.routers.registry import find_routers  # noqa: E402

DATA = ROOT / "vsraq_modifier" / "data"
EXPERT_PARAMS = ("gate_up_proj", "down_proj")
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5)


def rtn_(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Symmetric round-to-nearest per group along the last (input) dim, in place;
    the scale is amax / ((2^b - 1) / 2) and codes are clamped to [-2^(b-1),
    2^(b-1) - 1], as compressed-tensors' symmetric int quantization does."""
    shape = w.shape
    g = min(group, shape[-1])
    if shape[-1] % g:
        raise ValueError(f"input dim {shape[-1]} is not a multiple of group {g}")
    x = w.detach().float().reshape(-1, shape[-1] // g, g)
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / ((2**bits - 1) / 2)
    q = (x / scale).round().clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    w.data.copy_((q * scale).reshape(shape).to(w.dtype))
    return w


@torch.no_grad()
def quantize_rtn_(model: nn.Module, bits: int, group: int = 128) -> list[str]:
    """RTN every nn.Linear and every fused expert tensor of the decoder layers
    (routers, embeddings, norms and lm_head untouched); returns what it quantized."""
    sites = find_routers(model)
    routers = {id(s.router) for s in sites}
    done = []
    for name, module in model.model.layers.named_modules():
        if id(module) in routers:
            continue
        if isinstance(module, nn.Linear):
            rtn_(module.weight, bits, group)
            done.append(f"{name}.weight")
        for pname in EXPERT_PARAMS:
            p = getattr(module, "_parameters", {}).get(pname)
            if p is not None and p.ndim == 3:
                rtn_(p, bits, group)
                done.append(f"{name}.{pname}")
    return done


@torch.no_grad()
def router_stats(model: nn.Module, ids: torch.Tensor, seq_len: int) -> list[dict]:
    """Per MoE layer: mean top-1 probability, margin quantiles, expert load."""
    sites = find_routers(model)
    scores: dict[int, list[torch.Tensor]] = {s.layer: [] for s in sites}
    indices: dict[int, list[torch.Tensor]] = {s.layer: [] for s in sites}
    cap = RoutingCapture(sites)
    for chunk in chunk_token_ids(ids, seq_len):
        with cap:
            cap.reset()
            model(input_ids=chunk[None].to(next(model.parameters()).device),
                  use_cache=False)
        for layer, r in cap.routings.items():
            scores[layer].append(r.scores.float())
            indices[layer].append(r.indices)
    out = []
    for s in sites:
        sc, ix = torch.cat(scores[s.layer]), torch.cat(indices[s.layer])
        k, n_exp = s.spec.top_k, s.spec.num_experts
        top = sc.sort(-1, descending=True).values
        margin = top[:, k - 1] - top[:, k]
        load = torch.bincount(ix.reshape(-1), minlength=n_exp).float()
        share = load / load.sum()
        out.append({
            "layer": s.layer,
            "mean_top1_prob": top[:, 0].mean().item(),
            "mean_topk_mass": top[:, :k].sum(-1).mean().item(),
            "margin_quantiles": {str(q): margin.quantile(q).item() for q in QUANTILES},
            "share_margin_below_0.01": (margin < 0.01).float().mean().item(),
            "load_max_over_mean": (share.max() * n_exp).item(),
            "load_min_over_mean": (share.min() * n_exp).item(),
            "dead_experts": int((load == 0).sum()),
        })
    return out


def load_model(path: Path, device: str = "cpu") -> nn.Module:
    """The checkpoint upcast to float32 (the reference computes in full precision)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, experts_implementation="grouped_mm")
    return model.to(device).eval()


def run(model_dir: Path, text: Path, tokens: int, seq_len: int,
        schemes: list[tuple[int, int]], device: str = "cpu") -> dict:
    from transformers import AutoTokenizer

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(text.read_text("utf-8"), verbose=False)["input_ids"]
    ids = torch.tensor(ids[:tokens])
    ref = load_model(model_dir, device)
    result: dict = {"model": str(model_dir), "text": str(text), "tokens": ids.numel(),
                    "seq_len": seq_len, "router": router_stats(ref, ids, seq_len),
                    "schemes": []}
    for bits, group in schemes:
        q = load_model(model_dir, device)
        quantize_rtn_(q, bits, group)
        ev, ref_ppl = evaluate_model(ref, q, ids, seq_len=seq_len, oracle=True,
                                     label=f"rtn_w{bits}g{group}", progress=False)
        gap = ev.perplexity - ref_ppl
        result["reference_perplexity"] = ref_ppl
        result["schemes"].append({
            "scheme": f"W{bits}A16 g{group} RTN",
            "perplexity": ev.perplexity,
            "oracle_perplexity": ev.oracle_perplexity,
            "kl": ev.kl,
            "oracle_share": (
                (ev.perplexity - ev.oracle_perplexity) / gap if gap else None),
            "jaccard": [round(m.jaccard, 4) for m in ev.layers],
            "exact_match": [round(m.exact_match, 4) for m in ev.layers],
            "mean_jaccard": ev.mean("jaccard"),
        })
        del q
    result["seconds"] = round(time.time() - t0, 1)
    return result


def print_result(r: dict) -> None:
    print(f"{r['tokens']} held-out tokens, reference perplexity "
          f"{r['reference_perplexity']:.2f}")
    print("layer  top1-prob  margin q05/q25/q50   load max/mean  dead")
    for s in r["router"]:
        q = s["margin_quantiles"]
        print(f"{s['layer']:>5}  {s['mean_top1_prob']:.3f}      "
              f"{q['0.05']:.3f}/{q['0.25']:.3f}/{q['0.5']:.3f}     "
              f"{s['load_max_over_mean']:.2f}          {s['dead_experts']}")
    for s in r["schemes"]:
        delta = s["perplexity"] - r["reference_perplexity"]
        print(f"{s['scheme']}: PPL {s['perplexity']:.2f} ({delta:+.2f}),"
              f" oracle {s['oracle_perplexity']:.2f}, share {s['oracle_share']:.3f},"
              f" KL {s['kl']:.4f}, Jaccard {s['jaccard']}"
              f" (mean {s['mean_jaccard']:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DATA / "model")
    ap.add_argument("--text", type=Path, default=DATA / "heldout.txt")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--schemes", default="4:128,3:128",
                    help="bits:group pairs, comma-separated")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    schemes = [tuple(int(v) for v in s.split(":")) for s in args.schemes.split(",")]
    r = run(args.model, args.text, args.tokens, args.seq_len, schemes, args.device)
    print_result(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
