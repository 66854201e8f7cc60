"""``vsraq refit`` on llm-compressor checkpoints of a shipped MoE, measured on
the validation split of the calibration text (the default, where the command's
defaults were chosen) or on the shipped held-out text (``--eval-text heldout``:
the benchmark's check, never used to choose anything).

Makes two compressed-tensors W4A16 (int4, group 64: the experts are 64 wide)
checkpoints with llm-compressor ``oneshot`` (data-free ``QuantizationModifier``,
and ``GPTQModifier`` on the calibration windows), runs the command on each
(its own process, timed) with windows from the calibration part only, and
compares both checkpoints' routing, perplexity and KL with the full-precision
model. Resumable: finished steps are skipped.

    nice -n 10 python benchmarks/refit_command.py
    nice -n 10 python benchmarks/refit_command.py --eval-text heldout --seed 1 \
        --model deepseek_v3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

IGNORE = ["lm_head", "re:.*mlp.gate$"]


def _quantize(
    kind: str, model_dir: str, out: Path, samples: list[torch.Tensor]
) -> float:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    weights = dict(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=64
    )
    groups = {"g": {"targets": ["Linear"], "weights": weights}}
    start = time.perf_counter()
    if kind == "rtn":
        oneshot(
            model=model,
            recipe=QuantizationModifier(config_groups=groups, ignore=IGNORE),
        )
    else:
        ids = torch.cat(samples)
        ds = Dataset.from_dict(
            {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()}
        )
        oneshot(
            model=model,
            processor=AutoTokenizer.from_pretrained(model_dir),
            dataset=ds,
            recipe=GPTQModifier(config_groups=groups, ignore=IGNORE),
            num_calibration_samples=ids.shape[0],
            max_seq_length=ids.shape[1],
            shuffle_calibration_samples=False,
        )
    seconds = time.perf_counter() - start
    model.save_pretrained(out, save_compressed=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return seconds


def _evaluate(reference, path: Path, ids: torch.Tensor) -> dict:
    from vsraq_modifier.metrics import evaluate_routing
    from vsraq_modifier.metrics.loading import load_model

    rep = evaluate_routing(
        reference,
        [(path.name, str(path), lambda: load_model(path).model)],
        ids,
        seq_len=256,
        progress=False,
    )
    m = rep.models[0].to_dict()
    return {k: v for k, v in m.items() if k != "path"}


def run_name(args: argparse.Namespace) -> str:
    """The run's folder: the first run's name for the first run's settings, and a
    suffix per setting that differs (so that finished runs are never mixed)."""
    name = f"refit-command-n{args.nsamples}x{args.seqlen}-s{args.seed}"
    if args.model != "qwen3_moe":
        name += f"-{args.model}"
    if args.eval_text != "validation":
        name += f"-{args.eval_text}"
    if args.eval_tokens is not None:
        name += f"-e{args.eval_tokens}"
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsamples", type=int, default=32, help="windows (default 32)")
    ap.add_argument("--seqlen", type=int, default=256, help="tokens (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="default 0")
    ap.add_argument(
        "--model",
        default="qwen3_moe",
        help="a shipped model's name (qwen3_moe, deepseek_v3; default qwen3_moe)",
    )
    ap.add_argument(
        "--eval-text",
        choices=["validation", "heldout"],
        default="validation",
        help="validation split of the calibration text (default) or the held-out "
        "text",
    )
    ap.add_argument(
        "--eval-tokens",
        type=int,
        default=None,
        help="first N tokens of the evaluation text (default: all)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    from vsraq_modifier import data
    from vsraq_modifier.calibration import (
        calibration_samples,
        split_tokens,
        text_token_ids,
    )
    from vsraq_modifier.metrics.loading import load_model

    out = HERE / "runs" / run_name(args)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = str(data.shipped_model_dir(args.model))
    ids = text_token_ids(data.calibration_text_path(), model_dir)
    calib = split_tokens(ids, "calibration")
    if args.eval_text == "validation":
        val = split_tokens(ids, "validation")
    else:
        val = text_token_ids(data.heldout_text_path(), model_dir)
    val = val[: args.eval_tokens]
    text = work / "calibration-part.txt"  # the command's --dataset: no validation
    text.write_text(AutoTokenizer.from_pretrained(model_dir).decode(calib.tolist()))
    samples = calibration_samples(
        calib, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed
    )
    reference = load_model(model_dir).model
    for kind in ("rtn", "gptq"):
        result = out / f"{kind}.json"
        if result.exists():
            continue
        q, r = work / f"{kind}-w4a16-g64", work / f"{kind}-w4a16-g64-refit"
        qsec = _quantize(kind, model_dir, q, samples) if not q.exists() else None
        if r.exists():
            import shutil

            shutil.rmtree(r)
        cmd = [sys.executable, "-m", "vsraq_modifier.cli", "refit"]
        cmd += ["--reference", str(model_dir), "--quantized", str(q)]
        cmd += ["--dataset", str(text), "--nsamples", str(args.nsamples)]
        cmd += ["--seqlen", str(args.seqlen), "--seed", str(args.seed)]
        cmd += ["--no-progress", "--out", str(r)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rec = {
            "kind": kind,
            "scheme": "W4A16 int4 symmetric group 64, routers ignored",
            "quantize_seconds": qsec,
            "command": " ".join(["vsraq"] + cmd[3:]),
            "refit_wall_seconds": wall,
            "refit_cpu_seconds": cpu,
            "summary": done.stdout.strip().splitlines(),
            "model": args.model,
            "eval_text": args.eval_text,
            "eval_tokens": int(val.numel()),
            "before": _evaluate(reference, q, val),
            "after": _evaluate(reference, r, val),
        }
        result.write_text(json.dumps(rec, indent=1))
        b, a = rec["before"], rec["after"]
        print(
            f"{kind}: Jaccard {b['mean_jaccard']:.4f} -> {a['mean_jaccard']:.4f}, "
            f"ppl {b['perplexity']:.3f} -> {a['perplexity']:.3f}, "
            f"KL {b['kl']:.5f} -> {a['kl']:.5f}, refit {wall:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
