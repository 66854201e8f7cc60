"""``vsraq demo``: AutoRound's own loss vs VSRAQ on the shipped MoE, end to end.

Quantizes the shipped model twice at the same scheme, seed, iterations and
calibration samples (drawn from the shipped calibration text, disjoint from the
held-out text): once with AutoRound's own loss (label ``mse``), once with the VSRAQ
loss (label ``vsraq``). Writes both checkpoints, then the routing report of both
against the full-precision model (``vsraq report``'s code, in this process), and
prints the settings and the comparison.

Output directory::

    DIR/mse/  DIR/vsraq/        checkpoints (renamed into place when complete)
    DIR/routing.json, routing.png   the report (docs/report.md)
    DIR/demo.json               the settings and quantization times
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vsraq_modifier.cli.demo_checks import (
    DemoInputError,
    absolute,
    calibration_windows,
    check_inputs,
    check_out,
    check_space,
    heldout_ids,
)
from vsraq_modifier.cli.demo_summary import format_summary, summarize

__all__ = ["DEFAULTS", "DemoInputError", "add_parser", "run"]

#: chosen so the whole demo takes about 5 minutes on 2 idle cores (docs/demo.md)
DEFAULTS: dict[str, Any] = {
    "scheme": "W4A16G64",
    "iters": 100,
    "seed": 0,
    "nsamples": 128,
    "seqlen": 256,
    "batch_size": 8,
    "eval_tokens": 16384,
    "eval_seq_len": 256,
    "threads": 1,
}
LABELS = ("mse", "vsraq")
#: the benchmark method each label runs: ``--loss vsraq`` with its defaults, the
#: router re-fit included (the benchmark's plain ``vsraq`` leaves it off)
METHOD_OF = {"mse": "mse", "vsraq": "vsraq_default"}
#: what the demo writes into DIR (removed first by --overwrite)
OUTPUTS = (*LABELS, "routing.json", "routing.png", "demo.json", ".work")

_EPILOG = """\
examples:
  vsraq demo --out demo
  vsraq demo --out demo --overwrite --iters 200 --scheme W3A16

The demo refuses a DIR that is not empty unless --overwrite is given (which
replaces only the files the demo writes). Checkpoints are written under DIR/.work
and renamed to DIR/mse and DIR/vsraq only once complete.
"""


def _at_least(minimum: int, maximum: int | None = None):
    def parse(value: str) -> int:
        n = int(value)
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {minimum}")
        if maximum is not None and n > maximum:
            raise argparse.ArgumentTypeError(f"{value}: must be <= {maximum}")
        return n

    return parse


_positive = _at_least(1)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vsraq_modifier.runs import SCHEMES

    p = subparsers.add_parser(
        "demo",
        help="quantize the shipped MoE with AutoRound's loss and with VSRAQ, compare",
        description="Quantize the shipped MoE with AutoRound's own loss (label mse)\n"
        "and with VSRAQ (label vsraq) at the same scheme, seed, iterations and\n"
        "calibration samples; write both checkpoints and the routing report\n"
        "(routing.json, routing.png) to DIR; print the settings and the comparison.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
    p.add_argument(
        "--out", metavar="DIR", required=True, help="output directory (empty or new)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow a non-empty DIR; replaces the demo's own outputs in it",
    )
    p.add_argument(
        "--scheme",
        choices=list(SCHEMES),
        default=d["scheme"],
        help=f"AutoRound scheme (default: {d['scheme']}: int4 weights in groups of 64, "
        "compressed-tensors pack-quantized, which vLLM's Marlin MoE kernel serves; "
        "the shipped model's experts are 64 wide, too narrow for group 128). "
        + "; ".join(f"{s.name}: {s.description}" for s in SCHEMES.values()),
    )
    p.add_argument(
        "--iters",
        type=_positive,
        default=d["iters"],
        help=f"SignRound iterations per block, both runs (default: {d['iters']}; "
        "AutoRound's own default is 200)",
    )
    p.add_argument(
        "--seed",
        type=_at_least(0, 2**32 - 1),  # AutoRound seeds numpy with it
        default=d["seed"],
        help="AutoRound's seed and the choice of calibration windows, both runs "
        f"(default: {d['seed']})",
    )
    p.add_argument(
        "--nsamples",
        type=_positive,
        default=d["nsamples"],
        help=f"calibration samples (default: {d['nsamples']})",
    )
    p.add_argument(
        "--seqlen",
        type=_at_least(2),
        default=d["seqlen"],
        help=f"tokens per calibration sample (default: {d['seqlen']})",
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=d["batch_size"],
        help=f"samples per tuning step (default: {d['batch_size']})",
    )
    p.add_argument(
        "--eval-tokens",
        type=_positive,
        default=d["eval_tokens"],
        help="held-out tokens the report evaluates (the first N; default: "
        f"{d['eval_tokens']})",
    )
    p.add_argument(
        "--eval-seq-len",
        type=_at_least(2),
        default=d["eval_seq_len"],
        help=f"tokens per evaluation chunk (default: {d['eval_seq_len']})",
    )
    p.add_argument(
        "--no-oracle",
        action="store_true",
        help="skip the oracle-routing pass (each model's perplexity with its routers "
        "forced to the reference's expert choice; one more pass per model)",
    )
    p.add_argument(
        "--threads",
        type=_positive,
        default=d["threads"],
        help="torch threads (default: 1; on a small shared CPU a second thread "
        "makes AutoRound's many small ops wait for a busy core)",
    )
    p.add_argument(
        "--model",
        metavar="PATH",
        default=None,
        help="checkpoint directory with a tokenizer (default: the shipped model, "
        "vsraq_modifier/data/model)",
    )
    p.add_argument(
        "--calibration-text",
        metavar="FILE",
        default=None,
        help="UTF-8 text to draw calibration samples from, first 80%% of its tokens "
        "(default: the shipped vsraq_modifier/data/calibration.txt)",
    )
    p.add_argument(
        "--text",
        metavar="FILE",
        default=None,
        help="held-out UTF-8 text for the report (default: the shipped "
        "vsraq_modifier/data/heldout.txt)",
    )
    p.add_argument("--no-progress", action="store_true", help="no report progress bars")
    p.set_defaults(func=run)
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    """What the demo reports as one line: bad inputs, and the plugin's and the
    loaders' named refusals (anything else is a bug: a traceback)."""
    from vsraq_modifier.guards import CalibrationDataError, NonFiniteTuningError
    from vsraq_modifier.inputs import InputError
    from vsraq_modifier.memory import MemoryLimitError
    from vsraq_modifier.metrics.loading import (
        CheckpointFormatError,
        IncompleteCheckpointError,
    )
    from vsraq_modifier.routers import UnsupportedModelError

    return (
        DemoInputError,
        InputError,
        OSError,  # unreadable files, a file system that filled up meanwhile
        CalibrationDataError,
        NonFiniteTuningError,
        MemoryLimitError,
        IncompleteCheckpointError,
        CheckpointFormatError,
        UnsupportedModelError,
    )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except _known_errors() as e:
        print(f"vsraq demo: error: {e}", file=sys.stderr)
        return 1


def _prepare_out(out: Path) -> None:
    if out.is_dir():
        for name in OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _stage(message: str) -> None:
    print(f"\n=== {message}", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, model: Path, calib: Path, text: Path) -> dict:
    return {
        "model": str(model),
        "scheme": args.scheme,
        "iters": args.iters,
        "seed": args.seed,
        "nsamples": args.nsamples,
        "seqlen": args.seqlen,
        "batch_size": args.batch_size,
        "calibration_text": str(calib),
        "heldout_text": str(text),
        "eval_tokens": args.eval_tokens,
        "eval_seq_len": args.eval_seq_len,
        "oracle": not args.no_oracle,
        "threads": args.threads,
    }


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = absolute(args.out)
    check_out(out, args.overwrite)
    model_dir, calib, text = check_inputs(args)
    check_space(args, model_dir, out, len(LABELS))
    samples = calibration_windows(args, model_dir, calib)
    heldout = heldout_ids(args, model_dir, text)
    created = not out.exists()
    _prepare_out(out)
    try:
        return _demo(args, started, out, model_dir, (calib, text), samples, heldout)
    except BaseException:
        # a failed run leaves neither the work files nor a folder it created
        shutil.rmtree(out / ".work", ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _demo(
    args: argparse.Namespace,
    started: float,
    out: Path,
    model_dir: Path,
    texts: tuple[Path, Path],
    samples: list,
    heldout: Any,
) -> int:
    calib, text = texts
    import torch

    from vsraq_modifier.runs import quantize_checkpoint

    torch.set_num_threads(args.threads)
    settings = _settings(args, model_dir, calib, text)
    print("vsraq demo settings:")
    for key, value in settings.items():
        print(f"  {key:17} {value}")
    sys.stdout.flush()

    work = out / ".work"
    work.mkdir()
    # AutoRound calls gc.collect() after every block; with the interpreter's
    # objects frozen those collections stay cheap (results unchanged).
    gc.collect()
    gc.freeze()
    runs = {}
    try:
        for i, label in enumerate(LABELS, 1):
            _stage(
                f"[{i}/3] quantizing with loss={label} ({args.scheme}, "
                f"{args.iters} iters)"
            )
            with contextlib.chdir(work):  # AutoRound's work files stay in DIR/.work
                runs[label] = quantize_checkpoint(
                    model_dir,
                    (out / label).resolve(),
                    method=METHOD_OF[label],
                    scheme=args.scheme,
                    dataset=samples,
                    seed=args.seed,
                    iters=args.iters,
                    batch_size=args.batch_size,
                )
            print(f"{label}: {runs[label].seconds:.1f} s", file=sys.stderr)
    finally:
        gc.unfreeze()
    shutil.rmtree(work, ignore_errors=True)

    _stage("[3/3] routing report: reference vs mse and vsraq on held-out text")
    report = _report(args, model_dir, heldout, out)
    summary = summarize(report, runs)
    doc = {
        "settings": settings,
        "quantization": {
            k: {"seconds": r.seconds, "path": str(r.path), **r.settings}
            for k, r in runs.items()
        },
        "summary": summary,
        "wall_seconds": time.perf_counter() - started,
    }
    (out / "demo.json").write_text(json.dumps(doc, indent=2) + "\n")
    from vsraq_modifier.metrics import format_table

    print()
    print(format_table(report))
    print()
    print(format_summary(summary))
    _serving_verdict(out)
    print(
        f"\nwrote {out / 'mse'}, {out / 'vsraq'}, {out / 'routing.json'}, "
        f"{out / 'routing.png'}, {out / 'demo.json'} "
        f"({doc['wall_seconds'] / 60:.1f} min)"
    )
    return 0


def _serving_verdict(out: Path) -> None:
    """``vsraq check-serving`` of both checkpoints: will vLLM serve them?"""
    from vsraq_modifier.cli.check_serving import format_report
    from vsraq_modifier.serving import CheckpointError, check_checkpoint

    for label in LABELS:
        print(f"\nvsraq check-serving {out / label}:")
        try:
            print(format_report(check_checkpoint(out / label)))
        except CheckpointError as e:  # e.g. a research scheme in another format
            print(f"  not checked: {e}")


def _report(args: argparse.Namespace, model_dir: Path, token_ids: Any, out: Path):
    from vsraq_modifier.metrics import evaluate_routing
    from vsraq_modifier.metrics.loading import load_model
    from vsraq_modifier.metrics.plot import plot_report

    reference = load_model(model_dir).model

    def loader(path: Path):
        return lambda: load_model(path).model

    report = evaluate_routing(
        reference,
        [(label, str(out / label), loader(out / label)) for label in LABELS],
        token_ids,
        seq_len=args.eval_seq_len,
        reference_path=str(model_dir),
        oracle=not args.no_oracle,
        progress=not args.no_progress,
    )
    report.write_json(out / "routing.json")
    plot_report(report, out / "routing.png")
    return report
