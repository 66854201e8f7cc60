"""Time and peak memory of one AutoRound run on a tiny random MoE (docs/autoround.md).

Run one configuration per process, so that the peak RSS belongs to it alone::

    for loss in none mse vsraq vsraq-nolookahead; do
        python scripts/autoround_overhead.py --loss $loss
    done

Prints one JSON line: tuning wall and CPU seconds (``quantize()`` only, model build
and imports excluded; CPU time = user + system of this single-threaded process, far
less disturbed than wall time on a shared machine), the RSS before tuning and the
peak RSS during tuning (Linux VmHWM, reset right before ``quantize()``), and the
largest per-block VSRAQ reference-logit store.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time

import torch


def _status_mb(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024)
    return -1


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that it measures tuning."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--loss", default="vsraq", choices=["none", "mse", "vsraq", "vsraq-nolookahead"]
    )
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from vsraq_modifier.testing import tiny_model

    model = tiny_model(
        "qwen3_moe",
        num_hidden_layers=args.layers,
        hidden_size=128,
        head_dim=32,
        moe_intermediate_size=128,
        intermediate_size=128,
        num_experts=8,
        vocab_size=512,
    )
    g = torch.Generator().manual_seed(0)
    data = [
        torch.randint(0, 512, (1, args.seqlen), generator=g)
        for _ in range(args.nsamples)
    ]
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(512)}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0")),
        pad_token="t0",
    )
    run = dict(
        scheme="W4A16",
        dataset=data,
        iters=args.iters,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        batch_size=8,
        device_map="cpu",
    )
    if args.loss == "none":
        from auto_round import AutoRound

        ar = AutoRound(model, tok, enable_torch_compile=False, **run)
    else:
        from vsraq_modifier.integrations.autoround import autoround

        loss = "vsraq" if args.loss.startswith("vsraq") else args.loss
        ar = autoround(
            model,
            tok,
            loss=loss,
            lookahead=not args.loss.endswith("nolookahead"),
            **run,
        )
    gc.collect()
    rss_before = _status_mb("VmRSS")
    _reset_peak_rss()
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    ar.quantize()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    q = ar.alg_composer.block_quantizer
    ref = [r.reference_bytes for r in getattr(q, "reports", [])]
    print(
        json.dumps(
            {
                "loss": args.loss,
                "tune_wall_s": round(seconds, 2),
                "tune_cpu_s": round(cpu, 2),
                "rss_before_mb": rss_before,
                "peak_rss_during_tuning_mb": _status_mb("VmHWM"),
                "max_reference_bytes": max(ref) if ref else 0,
            }
        )
    )


if __name__ == "__main__":
    main()
