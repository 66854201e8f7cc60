"""``vsraq report``: how far quantized checkpoints route away from the reference.

Runs the reference and each quantized checkpoint end to end on the same token ids
and writes DIR/routing.json, DIR/routing.png and a table on the terminal. Metric
definitions: docs/objective.md ("Metrics"); the JSON shape:
:mod:`vsraq_modifier.metrics.results`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SEQ_LEN",
    "ReportInputError",
    "add_parser",
    "run",
]

#: tokens per chunk (each chunk is evaluated on its own, no context carried over)
DEFAULT_SEQ_LEN = 256
#: tokens evaluated (taken from the start of the text)
DEFAULT_MAX_TOKENS = 16384

_EPILOG = """\
examples:
  vsraq report --quantized rtn=out/rtn-w4 --quantized vsraq=out/vsraq-w4 --out rep
  vsraq report --reference Qwen3-30B-A3B/ --text wiki.txt --oracle \\
      --quantized w4a16=ckpt/ --device cuda --out rep

Each checkpoint is refused (exit status 1) unless transformers loads every one of
its tensors: some host exports load with expert weights silently left random.
"""


class ReportInputError(ValueError):
    """A command-line input that cannot be evaluated (named in the message)."""


def _labelled_path(value: str) -> tuple[str, str]:
    label, sep, path = value.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected LABEL=PATH, e.g. --quantized w4-rtn=out/rtn"
        )
    return label, path


def _at_least(minimum: int):
    def parse(value: str) -> int:
        n = int(value)
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {minimum}")
        return n

    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="compare the routing of quantized checkpoints with the reference",
        description="Run the reference model and each quantized checkpoint end to\n"
        "end on the same token ids; write DIR/routing.json (per-layer Jaccard, exact\n"
        "match, top-1 agreement, weight overlap; perplexity, KL), DIR/routing.png\n"
        "and print a table. Metric definitions: docs/objective.md.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--reference",
        metavar="PATH",
        default=None,
        help="full-precision checkpoint directory (default: the model shipped in "
        "vsraq_modifier/data/model)",
    )
    p.add_argument(
        "--quantized",
        metavar="LABEL=PATH",
        type=_labelled_path,
        action="append",
        required=True,
        help="a quantized checkpoint directory and the label it gets in the report "
        "(repeat for several). Formats: compressed-tensors (llm-compressor), "
        "auto_round (AutoRound), plain transformers",
    )
    p.add_argument(
        "--text",
        metavar="FILE",
        default=None,
        help="UTF-8 text to evaluate on (default: the shipped held-out text "
        "vsraq_modifier/data/heldout.txt)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="PATH",
        default=None,
        help="tokenizer directory (default: the reference directory)",
    )
    p.add_argument(
        "--seq-len",
        metavar="N",
        type=_at_least(2),
        default=DEFAULT_SEQ_LEN,
        help="tokens per chunk; the token ids are cut into consecutive chunks, each "
        f"run on its own without special tokens (default: {DEFAULT_SEQ_LEN})",
    )
    p.add_argument(
        "--max-tokens",
        metavar="N",
        type=_at_least(0),
        default=DEFAULT_MAX_TOKENS,
        help="evaluate at most the first N tokens of the text, 0 for all "
        f"(default: {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument(
        "--oracle",
        action="store_true",
        help="also measure each quantized model's perplexity with every router "
        "forced to the reference's expert choice (one more pass per model); "
        "perplexity minus oracle perplexity is the loss that routing causes",
    )
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="dtype to load the models in (default auto: float32 on a CPU, bfloat16 "
        "on an accelerator). A loader may override it (auto_round checkpoints run "
        "in float16 on a CPU); the report says which dtype each model ran in",
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device for all models, e.g. cpu, cuda, cuda:1 (default: cuda if "
        "available, else cpu)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars on stderr"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="output directory (created if needed) for routing.json and routing.png",
    )
    p.set_defaults(func=run)
    return p


def _resolve_inputs(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """Every path checked (and made absolute) before anything is loaded or
    created: a bad input costs no model load and leaves no --out behind."""
    from vsraq_modifier import data
    from vsraq_modifier.checkpoint_dir import check_model_dir
    from vsraq_modifier.inputs import (
        check_device,
        check_not_empty,
        check_output_place,
        check_text_file,
    )

    labels = [label for label, _ in args.quantized]
    if len(set(labels)) != len(labels):
        raise ReportInputError(f"--quantized labels must differ: {labels}")

    def local(path: str | Path, what: str) -> Path:
        folder = check_model_dir(path, what, hub=False)
        assert folder is not None  # hub=False: always a local directory
        return folder

    # None: not given (the shipped data); "" is refused, not taken as "not given"
    reference = local(
        data.shipped_model_dir() if args.reference is None else args.reference,
        "--reference",
    )
    quantized = [
        (label, local(path, f"--quantized {label}=")) for label, path in args.quantized
    ]
    tokenizer = reference
    if args.tokenizer is not None:
        check_not_empty(args.tokenizer, "--tokenizer")
        tokenizer = Path(args.tokenizer).expanduser().absolute()
    if not tokenizer.is_dir():
        raise ReportInputError(f"--tokenizer {tokenizer} is not a directory")
    text = check_text_file(
        data.heldout_text_path() if args.text is None else args.text, "--text"
    )
    if args.device is not None:
        check_device(args.device)
    args.out = str(check_output_place(args.out, "--out"))
    args.quantized = [(label, str(path)) for label, path in quantized]
    _check_same_vocabulary(reference, quantized)
    from vsraq_modifier.metrics.loading import check_expert_schemes

    for _, path in quantized:  # mixed expert schemes: refused before any load
        check_expert_schemes(path)
    return reference, text, tokenizer


def _vocab_size(folder: Path) -> int | None:
    import json

    doc = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    size = doc.get("vocab_size") or (doc.get("text_config") or {}).get("vocab_size")
    return size if isinstance(size, int) else None


def _check_same_vocabulary(reference: Path, quantized: list) -> None:
    """Checkpoints of another vocabulary cannot be compared token by token (their
    logits have another width); refuse them like checkpoints of another model."""
    want = _vocab_size(reference)
    for label, path in quantized:
        got = _vocab_size(path)
        if want and got and got != want:
            raise ReportInputError(
                f"{label}: vocabulary of {got} tokens differs from the reference's "
                f"({want}, {reference}); compare checkpoints of the same model"
            )


def _check_token_ids(token_ids: object, reference: Path, tokenizer: Path) -> None:
    """Token ids the reference has embeddings for (else an IndexError deep in the
    first forward pass)."""
    size = _vocab_size(reference)
    top = int(token_ids.max()) if token_ids.numel() else -1  # type: ignore[attr-defined]
    if size and top >= size:
        raise ReportInputError(
            f"the tokenizer in {tokenizer} gives token id {top}, beyond the "
            f"reference's vocabulary of {size}; pass the model's own --tokenizer"
        )


def _check_seq_len(model: object, seq_len: int) -> None:
    config = getattr(model, "config", None)
    limit = getattr(
        getattr(config, "get_text_config", lambda: config)(),
        "max_position_embeddings",
        None,
    )
    if isinstance(limit, int) and seq_len > limit:
        raise ReportInputError(
            f"--seq-len {seq_len} exceeds the model's max_position_embeddings "
            f"({limit}); pass --seq-len {limit} or less"
        )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as e:  # report the known failures plainly, not as a traceback
        from vsraq_modifier.metrics.loading import IncompleteCheckpointError
        from vsraq_modifier.routers import UnsupportedModelError

        known = (
            OSError,  # unreadable files, --out on a full or read-only file system
            IncompleteCheckpointError,
            UnsupportedModelError,
            FileNotFoundError,
            ReportInputError,
            ImportError,
            ValueError,  # checkpoints of different models, too little text, ...
        )
        if not isinstance(e, known):
            raise
        print(f"vsraq report: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    reference_dir, text, tokenizer = _resolve_inputs(args)

    import torch

    from vsraq_modifier.metrics import evaluate_routing, format_table
    from vsraq_modifier.metrics.loading import load_model, load_token_ids
    from vsraq_modifier.metrics.plot import plot_report

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    token_ids = load_token_ids(text, tokenizer, args.max_tokens or None, what="--text")
    _check_token_ids(token_ids, reference_dir, tokenizer)
    reference = load_model(reference_dir, dtype=args.dtype, device=device)
    _check_seq_len(reference.model, args.seq_len)

    def loader(path: str):  # one quantized model in memory at a time
        return lambda: load_model(path, dtype=args.dtype, device=device).model

    report = evaluate_routing(
        reference.model,
        [(label, path, loader(path)) for label, path in args.quantized],
        token_ids,
        seq_len=args.seq_len,
        reference_path=str(reference_dir),
        oracle=args.oracle,
        progress=not args.no_progress,
    )
    created = not out.exists()
    names = ("routing.json", "routing.png")
    existed = {n for n in names if (out / n).exists() or (out / n).is_symlink()}
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves none
    try:
        json_path = report.write_json(out / "routing.json")
        png_path = plot_report(report, out / "routing.png")
    except OSError as e:  # e.g. the disk filled up meanwhile: no partial report
        for name in set(names) - existed:
            (out / name).unlink(missing_ok=True)
        if created:
            out.rmdir()
        raise OSError(
            f"--out {out}: writing the report failed ({e.strerror or e})"
        ) from None
    print(format_table(report))
    print(f"\nwrote {json_path} and {png_path}")
    return 0
