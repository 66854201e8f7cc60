"""``vsraq allocate``: choose a scheme per unit (attention, routed experts, shared
expert of each layer; or each expert) under a budget of average bits, from
round-to-nearest sensitivity measured per calibration domain; write the result as
an llm-compressor recipe and an AutoRound layer_config. See docs/allocate.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

DEFAULT_SEQ_LEN = 256
DEFAULT_MAX_TOKENS = 2048

_EPILOG = """\
examples:
  vsraq allocate --avg-bits 3 --schemes W2A16G64,W4A16@64 --out alloc
  vsraq allocate --model Qwen3-30B-A3B/ --dataset code=code.jsonl \\
      --dataset prose=prose.txt --avg-bits 3 --schemes W2A16G64,W4A16 --out alloc
then quantize with either host:
  auto-round --model M --scheme W4A16 --layer_config "$(cat alloc/layer_config.json)"
  oneshot(model=M, dataset=..., recipe="alloc/recipe.yaml")

Serving: in --unit layer (the default) every MoE layer's routed experts share one
scheme, which vLLM's fused-MoE kernels require; int2 expert layers still need
vLLM's optional int2 MoE kernel, int3 MoE is not in released vLLM (the output
says which layers). --unit expert is NOT servable by vLLM's fused MoE, and
transformers 5.17 reloads a per-expert-mixed compressed-tensors checkpoint wrongly.
In layer mode too, transformers 5.17 does not reload a compressed-tensors
checkpoint whose MoE layers differ in expert scheme (vLLM does; the output says
so); AutoRound's fake export reloads (docs/allocate.md).
"""


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be a positive integer")
    return n


def _routing_weight(value: str) -> float | None:
    if value == "auto":
        return None
    try:
        w = float(value)
    except ValueError:
        w = -1.0
    if w < 0:
        raise argparse.ArgumentTypeError(f"{value}: use auto or a number >= 0")
    return w


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "allocate",
        help="mixed precision per MoE layer (or expert), routing- and domain-aware",
        description="Measure, for each unit and candidate scheme, the damage of\n"
        "quantizing that unit alone (round-to-nearest with the scheme's AutoRound\n"
        "quantizer): KL of the outputs and the routing disagreement of the routers\n"
        "downstream, per calibration domain, combined with equal weight per domain.\n"
        "Then choose one scheme per unit minimising the summed damage within the\n"
        "budget (exact integer programme), and write DIR/recipe.yaml\n"
        "(llm-compressor), DIR/layer_config.json (AutoRound), DIR/allocation.json,\n"
        "DIR/allocation.png. Cost: (1 + units x schemes) forward passes over the\n"
        "calibration chunks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        metavar="PATH",
        default=None,
        help="MoE checkpoint directory (default: the model shipped in "
        "vsraq_modifier/data/model)",
    )
    p.add_argument(
        "--dataset",
        metavar="[NAME=]FILE",
        action="append",
        default=None,
        help="a calibration domain: plain UTF-8 text, or JSON/JSONL as AutoRound's "
        "--dataset takes (strings or objects with a 'text' field); NAME defaults to "
        "the file's stem; repeat for several domains, names must differ (default: "
        "the shipped calibration text, split into its three sources kjv, pydocs, "
        "jargon)",
    )
    p.add_argument(
        "--domain-weights",
        metavar="SPEC",
        default="equal",
        help="how domains are combined: equal (each domain counts the same, so a "
        "frequent one does not decide alone), tokens (in proportion to each "
        "domain's tokens: pooling, no balance), or NAME=W,NAME=W,... "
        "(default: equal)",
    )
    p.add_argument(
        "--avg-bits",
        metavar="B",
        type=float,
        required=True,
        help="budget: average bits per quantized weight, scale and zero-point "
        "overhead counted as AutoScheme counts it; outside the reachable range the "
        "error names both bounds",
    )
    p.add_argument(
        "--schemes",
        metavar="S1,S2,...",
        required=True,
        help="candidate schemes: AutoRound preset names (integer, weight-only), each "
        "optionally with @GROUP for its group size, e.g. W2A16G64,W4A16@64 (the "
        "shipped model's experts are 64 wide, so W4A16 needs @64)",
    )
    p.add_argument(
        "--unit",
        choices=("layer", "expert"),
        default="layer",
        help="layer: one scheme for all routed experts of an MoE layer (plus "
        "attention and shared expert as units; what vLLM serves). expert: one "
        "scheme per expert, NOT servable by vLLM's fused MoE (default: layer)",
    )
    p.add_argument(
        "--routing-weight",
        metavar="A",
        type=_routing_weight,
        default=None,
        help="sensitivity = KL + A x routing disagreement; auto makes both terms "
        "count equally over the whole table (default: auto)",
    )
    p.add_argument(
        "--modifier",
        default="VSRAQModifier",
        choices=(
            "VSRAQModifier",
            "AutoRoundModifier",
            "GPTQModifier",
            "QuantizationModifier",
        ),
        help="llm-compressor modifier of the recipe's stage (default: VSRAQModifier)",
    )
    p.add_argument(
        "--seq-len",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_SEQ_LEN,
        help=f"tokens per calibration chunk (default: {DEFAULT_SEQ_LEN})",
    )
    p.add_argument(
        "--max-tokens",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_MAX_TOKENS,
        help="tokens measured per domain, in chunks spread evenly over its text "
        f"(default: {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu, cuda (default: cuda if available, else cpu)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty DIR once the new files are complete",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="output directory; written in full or not at all",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vsraq_modifier.allocate.domains import DomainError
    from vsraq_modifier.allocate.schemes import SchemeError
    from vsraq_modifier.allocate.solve import BudgetError
    from vsraq_modifier.output import OutputDirError
    from vsraq_modifier.routers import UnsupportedModelError

    known = (
        BudgetError,
        DomainError,
        SchemeError,
        UnsupportedModelError,
        OutputDirError,
        FileNotFoundError,
    )
    try:
        return _run(args)
    except known as e:
        print(f"vsraq allocate: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vsraq_modifier import data
    from vsraq_modifier.allocate.domains import domain_weights, load_domains
    from vsraq_modifier.allocate.outputs import format_table, write_outputs
    from vsraq_modifier.allocate.pipeline import allocate, domain_chunks, plan
    from vsraq_modifier.allocate.schemes import parse_schemes
    from vsraq_modifier.output import check_output_dir, staged_output

    schemes = parse_schemes(args.schemes)
    check_output_dir(args.out, overwrite=args.overwrite)
    model_dir = Path(args.model) if args.model else data.shipped_model_dir()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no config.json there")
    domains = load_domains(args.dataset)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, device_map=device
    ).eval()
    plan(model, schemes, args.unit, args.avg_bits)  # refuse before measuring
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    chunks, available = domain_chunks(domains, tokenizer, args.seq_len, args.max_tokens)
    domain_weights(args.domain_weights, list(chunks), available)  # check early
    rec = allocate(
        model,
        chunks,
        available,
        schemes=schemes,
        avg_bits=args.avg_bits,
        mode=args.unit,
        weights=args.domain_weights,
        routing_weight=args.routing_weight,
        progress=not args.no_progress,
    )
    with staged_output(args.out, overwrite=args.overwrite) as stage:
        write_outputs(rec, stage, args.modifier)
    print(format_table(rec))
    print(
        f"\nwrote {Path(args.out) / 'recipe.yaml'}, layer_config.json, "
        "allocation.json, allocation.png"
    )
    return 0
