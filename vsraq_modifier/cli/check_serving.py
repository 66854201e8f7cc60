"""``vsraq check-serving CKPT``: would vLLM serve this quantized MoE checkpoint?

Reads config.json and the safetensors headers (no weight is loaded, no GPU or vLLM
needed), applies vLLM's fused-MoE rules (:mod:`vsraq_modifier.serving.rules`, with
the vLLM files they were read from) to every MoE layer and prints one row per
layer, what to change, and a verdict. Exit status: 0 servable, 1 not servable (or
only through an optional kernel), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from vsraq_modifier.serving import CheckpointError, ServingReport, check_checkpoint

__all__ = ["add_parser", "format_report", "run"]

_EPILOG = """\
examples:
  vsraq check-serving demo/vsraq
  vsraq check-serving out/qwen3-w4a16 --json > serving.json

Exit status: 0 every MoE layer is servable by released vLLM; 1 at least one is not
(or needs an optional kernel); 2 the path is not a readable MoE checkpoint in
compressed-tensors form (AutoRound's own format: export with --format
llm_compressor). The rules and the vLLM files they come from: docs/serving.md.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check-serving",
        help="check a quantized MoE checkpoint against vLLM's serving rules",
        description="Check each MoE layer of a compressed-tensors checkpoint against\n"
        "vLLM's fused-MoE rules: one scheme for all experts of a layer, a kernel\n"
        "for that scheme and shape (Marlin WNA16 int4/int8, Triton WNA16, NVFP4,\n"
        "MXFP4, FP8), a full-precision router. Prints a table per layer, what to\n"
        "change, and a verdict. Reads only config.json and tensor headers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="checkpoint directory (config.json with quantization_config, "
        "*.safetensors), e.g. an llm-compressor save_compressed output or "
        "AutoRound's llm_compressor export",
    )
    p.add_argument(
        "--tensor-parallel-size",
        metavar="N",
        type=_positive,
        default=1,
        help="GPUs vLLM will shard each expert over (vllm serve "
        "--tensor-parallel-size; default 1): each holds 1/N of the intermediate "
        "width, which the kernel rules then apply to",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout instead of the table "
        "(same exit status)",
    )
    p.set_defaults(func=run)
    return p


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return n


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()


def format_report(report: ServingReport) -> str:
    """The per-layer table, the changes to make and the verdict line."""
    head = ["layer", "experts", "attention", "router", "hidden/inter", "vLLM kernel"]
    rows = [
        [
            str(lr.layer),
            "; ".join(f"{s} x{n}" for s, n in lr.experts.items()),
            "; ".join(lr.attention) or "-",
            lr.router,
            f"{lr.hidden}/{lr.intermediate}",
            lr.kernel if lr.servable else f"{lr.status.upper()}",
        ]
        for lr in report.layers
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    tp = report.tensor_parallel_size
    lines = [
        f"{report.path}: {report.model_type}, {report.quant_method}"
        + (f", tensor parallel {tp} (intermediate per rank)" if tp > 1 else ""),
        _row(head, widths),
        *(_row(r, widths) for r in rows),
    ]
    problems = report.all_problems()
    if problems:
        lines += ["", "to change:", *(f"- {p}" for p in problems)]
    verdict = {
        "servable": "servable by vLLM",
        "needs optional kernel": "NOT servable by default: needs an optional kernel",
        "not servable": "NOT servable by vLLM",
    }[report.status]
    n_bad = sum(not lr.servable for lr in report.layers)
    lines += [
        "",
        f"verdict: {verdict} ({n_bad} of {len(report.layers)} MoE layers refused)"
        if n_bad
        else f"verdict: {verdict}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        report = check_checkpoint(
            args.checkpoint, tensor_parallel_size=args.tensor_parallel_size
        )
    except CheckpointError as e:
        print(f"vsraq check-serving: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.servable else 1
