"""One benchmark cell (method x scheme x seed), run in its own process by run.py.

Quantizes the model, evaluates the checkpoint against the full-precision model
end to end (routing metrics per layer, perplexity, oracle perplexity, KL), writes
the result as JSON to ``--result`` and deletes the checkpoint. Its own peak RSS
up to the end of quantization is recorded here; run.py adds the whole process's.

    python benchmarks/cell.py --spec '{"method": "vsraq", ...}' --result out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path


def _cpu_seconds() -> float:
    """User + system CPU time of this process (single-threaded: far less disturbed
    by other processes on a shared machine than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("torch", "transformers", "auto-round", "compressed-tensors")
    return {n: version(n) for n in names}


def _eval_ids(spec: dict, model_dir: str):
    from vsraq_modifier import data
    from vsraq_modifier.calibration import split_tokens, text_token_ids

    if spec["eval_text"] == "validation":
        ids = split_tokens(
            text_token_ids(data.calibration_text_path(), model_dir), "validation"
        )
    else:
        ids = text_token_ids(data.heldout_text_path(), model_dir)
    return ids[: spec["eval_tokens"]]


def run_cell(spec: dict, result: Path, work: Path) -> dict:
    import torch

    from vsraq_modifier import data
    from vsraq_modifier.calibration import (
        calibration_samples,
        split_tokens,
        text_token_ids,
    )
    from vsraq_modifier.runs import quantize_checkpoint

    torch.set_num_threads(spec["threads"])
    model_dir = data.resolve_model(spec["model"])
    ids = split_tokens(
        text_token_ids(data.calibration_text_path(), model_dir), "calibration"
    )
    samples = calibration_samples(
        ids, nsamples=spec["nsamples"], seqlen=spec["seqlen"], seed=spec["seed"]
    )
    ckpt = work / "checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    gc.collect()
    gc.freeze()  # AutoRound's gc.collect() per block stays cheap
    os.chdir(work)  # AutoRound's work files
    cpu0 = _cpu_seconds()
    q = quantize_checkpoint(
        model_dir,
        ckpt,
        method=spec["method"],
        scheme=spec["scheme"],
        dataset=samples,
        seed=spec["seed"],
        iters=spec["iters"],
        batch_size=spec["batch_size"],
        options=spec["options"] or None,
    )
    cpu_quant = _cpu_seconds() - cpu0
    gc.unfreeze()
    rss_quant = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from vsraq_modifier.metrics import evaluate_model
    from vsraq_modifier.metrics.loading import load_model

    start = time.perf_counter()
    reference = load_model(model_dir).model
    quantized = load_model(ckpt)
    eval_ids = _eval_ids(spec, model_dir)
    evaluation, ref_ppl = evaluate_model(
        reference,
        quantized.model,
        eval_ids,
        seq_len=spec["eval_seq_len"],
        label=spec["method"],
        oracle=True,
        progress=False,
    )
    eval_seconds = time.perf_counter() - start
    original = None
    if (q.settings.get("vsraq") or {}).get("router_refit") == "ridge":
        from refit_heldout import original_router_agreement

        original = original_router_agreement(
            reference, quantized.model, eval_ids,
            seq_len=spec["eval_seq_len"],
        )
    shutil.rmtree(ckpt, ignore_errors=True)
    doc = {
        "method": spec["method"],
        "scheme": spec["scheme"],
        "seed": spec["seed"],
        "spec": spec,
        "quantization": {"seconds": q.seconds, "cpu_seconds": cpu_quant, **q.settings},
        "blocks": q.blocks,
        "peak_rss_quant_mb": rss_quant,
        "eval_seconds": eval_seconds,
        "eval": {
            "text": spec["eval_text"],
            "tokens": sum(m.tokens for m in evaluation.layers[:1]),
            "reference_perplexity": ref_ppl,
            **evaluation.to_dict(),
            # re-fit cells: each router against the original one on its inputs
            **({"original_router": original} if original is not None else {}),
        },
        "versions": _versions(),
        "python": platform.python_version(),
    }
    result.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="the cell as JSON (run.py)")
    ap.add_argument("--result", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    run_cell(json.loads(args.spec), args.result.resolve(), args.work.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
