"""``vsraq refit``: re-fit the full-precision routers of a quantized MoE checkpoint.

Router by router in model order, router l is re-fitted (:mod:`vsraq_modifier.refit`)
on its inputs in the quantized model, with routers < l already re-fitted, against
the reference's router logits on the same tokens; a fit that does not raise the
routing agreement on held-aside tokens is not kept. The output is the input
checkpoint with only the router tensors' bytes replaced (same files, config,
tensor order, metadata; every other byte identical), written through a staging
directory so it is complete or absent. docs/refit.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vsraq_modifier.refit import DEFAULT_RIDGE, RefitOptions, RefitResult
from vsraq_modifier.refit.checkpoint import (
    STORAGE_DTYPES,
    RefitInputError,
    router_keys,
    shards,
    write_checkpoint,
)
from vsraq_modifier.refit.model import batches, refit_routers

__all__ = ["RefitInputError", "add_parser", "read_dataset", "refit_routers", "run"]

DEFAULT_NSAMPLES = 128
DEFAULT_SEQLEN = 256
#: config fields that must agree between the reference and the checkpoint
_SAME = (
    "model_type",
    "num_hidden_layers",
    "hidden_size",
    "num_experts",
    "num_local_experts",
    "n_routed_experts",
    "num_experts_per_tok",
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "refit",
        help="re-fit the routers of a quantized MoE checkpoint to its inputs",
        description="Re-fit each full-precision router of a quantized MoE checkpoint\n"
        "(compressed-tensors from llm-compressor, or AutoRound's llm_compressor\n"
        "export) to the inputs it sees in the quantized model, against the\n"
        "reference's router logits. Writes OUT_DIR: the input checkpoint with only\n"
        "the router tensors changed. docs/refit.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a(
        "--reference",
        metavar="FP_DIR",
        required=True,
        help="the full-precision checkpoint the quantized one was made from",
    )
    a(
        "--quantized",
        metavar="Q_DIR",
        required=True,
        help="the quantized checkpoint directory (config.json and shards)",
    )
    a(
        "--dataset",
        metavar="FILE",
        required=True,
        help="calibration text: plain UTF-8, or .json/.jsonl records with a 'text' "
        "field (as AutoRound's --dataset takes)",
    )
    a(
        "--nsamples",
        type=int,
        default=DEFAULT_NSAMPLES,
        help=f"calibration windows (default {DEFAULT_NSAMPLES})",
    )
    a(
        "--seqlen",
        type=int,
        default=DEFAULT_SEQLEN,
        help=f"tokens per window (default {DEFAULT_SEQLEN})",
    )
    a(
        "--ridge",
        type=float,
        default=DEFAULT_RIDGE,
        help=f"relative ridge strength, > 0 (default {DEFAULT_RIDGE:g})",
    )
    a(
        "--holdout",
        type=float,
        default=RefitOptions().holdout,
        help="share of the tokens held aside to check each fit; a fit is kept only "
        "if it raises routing agreement there (default 0.25)",
    )
    a(
        "--accept-se",
        type=float,
        default=RefitOptions().accept_se,
        help="a fit is kept only if its held-aside gain exceeds this many standard "
        "errors of the gain, >= 0 (default %(default)g; 0: any gain)",
    )
    a(
        "--fit-part-only",
        action="store_true",
        help="keep the fit made without the held-aside tokens (default: once a fit "
        "is kept, fit again on all the tokens)",
    )
    a(
        "--target",
        choices=("auto", "logits", "centred", "sigmoid"),
        default="auto",
        help="fit target (default auto: centred logits for softmax routers, the "
        "logits for sigmoid routers; sigmoid: a fit in score space, one Gram matrix "
        "per expert, E times the cost)",
    )
    a(
        "--weights",
        choices=("uniform", "boundary"),
        default="uniform",
        help="token/expert weights (default uniform)",
    )
    a("--seed", type=int, default=0, help="picks the windows and held-aside tokens")
    a("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    a(
        "--device",
        default="cpu",
        help="torch device of the forward passes (default cpu); on a CUDA device "
        "the re-fit's float64 solves run there too",
    )
    a("--no-progress", action="store_true", help="no progress bar on stderr")
    a(
        "--out",
        metavar="OUT_DIR",
        required=True,
        help="output checkpoint directory (must not exist or be empty)",
    )
    p.set_defaults(func=run)
    return p


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg.get("text_config") or cfg


def _config(path: Path, what: str) -> dict[str, Any]:
    f = path / "config.json"
    if not f.is_file():
        raise RefitInputError(
            f"{what} {path}: no config.json; pass a checkpoint directory"
        )
    return json.loads(f.read_text())


def check_same_model(ref: dict[str, Any], q: dict[str, Any]) -> None:
    """Refuse a checkpoint whose architecture differs from the reference's."""
    r, c = _text_config(ref), _text_config(q)
    diff = [f"{k} {r.get(k)} vs {c.get(k)}" for k in _SAME if r.get(k) != c.get(k)]
    if diff:
        raise RefitInputError(
            "the reference and the quantized checkpoint are not the "
            f"same model ({', '.join(diff)}); pass the reference "
            "the checkpoint was quantized from"
        )


def read_dataset(path: Path) -> str:
    """The calibration text of FILE (plain text, or JSON/JSONL records' 'text')."""
    if not path.is_file():
        raise RefitInputError(f"--dataset {path}: not a file")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RefitInputError(
            f"--dataset {path}: not UTF-8 text (byte {e.start}); convert it to UTF-8"
        ) from None
    if path.suffix.lower() not in (".json", ".jsonl"):
        texts = [raw]
    else:
        try:
            if path.suffix.lower() == ".jsonl":
                records = [json.loads(ln) for ln in raw.splitlines() if ln.strip()]
            else:
                loaded = json.loads(raw)
                records = loaded if isinstance(loaded, list) else [loaded]
        except json.JSONDecodeError as e:
            raise RefitInputError(
                f"--dataset {path}: invalid JSON at line {e.lineno}: {e.msg}"
            ) from None
        texts = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise RefitInputError(
                    f"--dataset {path}: record {i} has no 'text' "
                    'string; each record needs {"text": "..."}'
                )
            texts.append(rec["text"])
    text = "\n\n".join(texts)
    if not text.strip():
        raise RefitInputError(f"--dataset {path}: no text")
    return text


def _calibration(args: argparse.Namespace, reference: Path, ref_cfg: dict) -> list:
    from transformers import AutoTokenizer

    from vsraq_modifier.calibration import calibration_samples

    text = read_dataset(Path(args.dataset))
    limit = _text_config(ref_cfg).get("max_position_embeddings")
    if isinstance(limit, int) and args.seqlen > limit:
        raise RefitInputError(
            f"--seqlen {args.seqlen} exceeds the model's "
            f"max_position_embeddings ({limit})"
        )
    for folder in (reference, Path(args.quantized)):
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
            break
        except (OSError, ValueError):
            continue
    else:
        raise RefitInputError(f"no tokenizer in {reference} or {args.quantized}")
    ids = torch.tensor(tok(text, add_special_tokens=False, verbose=False)["input_ids"])
    try:
        return calibration_samples(
            ids, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed
        )
    except ValueError as e:
        raise RefitInputError(f"calibration text too short: {e}") from None


def run(args: argparse.Namespace) -> int:
    from vsraq_modifier.metrics.loading import IncompleteCheckpointError
    from vsraq_modifier.objective.pair import NonFiniteRoutingError
    from vsraq_modifier.output import OutputDirError
    from vsraq_modifier.routers import UnsupportedModelError

    try:
        return _run(args)
    except (
        RefitInputError,
        OutputDirError,
        IncompleteCheckpointError,
        UnsupportedModelError,
        NonFiniteRoutingError,
        FileNotFoundError,
    ) as e:
        print(f"vsraq refit: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


def _options(args: argparse.Namespace) -> RefitOptions:
    if args.nsamples < 1 or args.seqlen < 2 or args.batch_size < 1:
        raise RefitInputError("--nsamples and --batch-size must be >= 1, --seqlen >= 2")
    try:
        return RefitOptions(
            method="ridge",
            ridge=args.ridge,
            holdout=args.holdout,
            accept_se=args.accept_se,
            refit_all=not args.fit_part_only,
            target=args.target,
            weights=args.weights,
            seed=args.seed,
        )
    except ValueError as e:
        raise RefitInputError(f"bad option: {e}") from None


def _load_quantized(path: Path, cfg: dict[str, Any], device: str) -> Any:
    """FP4 compressed-tensors checkpoints through llm-compressor's reload fix
    (transformers 5.17 drops the experts' global scales), in bfloat16 as they
    decompress; everything else through the project's checked loader."""
    from vsraq_modifier.metrics.loading import load_model

    fmt = json.dumps(cfg.get("quantization_config") or {})
    if "fp4-pack-quantized" in fmt:
        from vsraq_modifier.integrations.llmcompressor.reload import load_compressed

        return load_compressed(path, dtype=torch.bfloat16, device_map=device)
    return load_model(path, dtype="float32", device=device).model


def _run(args: argparse.Namespace) -> int:
    from vsraq_modifier.metrics.loading import load_model
    from vsraq_modifier.output import check_output_dir, staged_output
    from vsraq_modifier.routers import UnsupportedModelError, find_routers

    options = _options(args)
    ref_dir, q_dir = Path(args.reference), Path(args.quantized)
    ref_cfg, q_cfg = _config(ref_dir, "--reference"), _config(q_dir, "--quantized")
    check_same_model(ref_cfg, q_cfg)
    check_output_dir(args.out)
    tensors = shards(q_dir)
    samples = _calibration(args, ref_dir, ref_cfg)
    reference = load_model(ref_dir, dtype="float32", device=args.device).model
    try:
        ref_sites = find_routers(reference)
    except UnsupportedModelError as e:
        raise RefitInputError(f"--reference {ref_dir}: {e}") from None
    # the checkpoint's router tensors, checked before it is loaded (a quantized or
    # missing router would fail the load with a less telling message)
    keys = router_keys(reference, ref_sites, tensors, q_dir)
    quantized = _load_quantized(q_dir, q_cfg, args.device)
    try:
        sites = find_routers(quantized)
    except UnsupportedModelError as e:
        raise RefitInputError(
            f"--quantized {q_dir}: no MoE router to re-fit ({e})"
        ) from None
    for s in sites:
        w = s.router.weight
        if not w.is_floating_point() or w.shape != (s.spec.num_experts, w.shape[1]):
            raise RefitInputError(
                f"router of layer {s.layer} is not a float [E, H] "
                "weight; add its name to the recipe's ignore list"
            )
    dtypes = {
        layer: STORAGE_DTYPES[tensors[k["weight"]][2]["dtype"]]
        for layer, k in keys.items()
    }
    windows = batches(samples, args.batch_size, args.device)
    results = refit_routers(
        reference, quantized, windows, options, dtypes, progress=not args.no_progress
    )
    new: dict[str, torch.Tensor] = {}
    for site, res in results:
        if not res.accepted:
            continue
        k = keys[site.layer]
        new[k["weight"]] = res.fit.weight
        if "bias" in k and res.fit.bias is not None:
            new[k["bias"]] = res.fit.bias
        if "e_score_correction_bias" in k and res.fit.correction_bias is not None:
            new[k["e_score_correction_bias"]] = res.fit.correction_bias
    with staged_output(args.out) as stage:
        write_checkpoint(q_dir, stage, tensors, new)
    print(format_summary(results))
    print(
        f"\nwrote {Path(args.out)} ({sum(r.accepted for _, r in results)} of "
        f"{len(results)} routers re-fitted)"
    )
    return 0


def format_summary(results: list[tuple[Any, RefitResult]]) -> str:
    """One line per router: fit error and held-aside Jaccard before -> after."""
    rows = [
        "layer  fit error before -> after   held-aside Jaccard before -> after  kept"
    ]
    for site, r in results:
        rows.append(
            f"{site.layer:>5}  {r.fit_error_before:>10.4g} -> "
            f"{r.fit_error_after:<10.4g}  {r.agreement_before:>16.4f} -> "
            f"{r.agreement_after:<8.4f}  {'re-fit' if r.accepted else 'original'}"
        )
    return "\n".join(rows)
