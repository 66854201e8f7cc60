"""Run the benchmark matrix (methods x schemes x seeds) on the shipped MoE.

Each cell runs in its own process (benchmarks/cell.py; peak RSS read with
``os.wait4``) and leaves one JSON file in ``benchmarks/runs/<run-id>/``; a cell
whose file exists is skipped, so an interrupted run resumes where it stopped.
The run id names the settings (iterations, samples, evaluation tokens, options);
``run.json`` in the run directory holds them and a rerun with other settings
under the same id is refused. Summarise with ``python benchmarks/report.py``.

    nohup nice -n 5 python benchmarks/run.py --schemes W4A16 W3A16 \\
        > benchmarks/runs/log.txt 2>&1 &

Settings and the time arithmetic: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
sys.path.insert(0, str(HERE.parent))

from vsraq_modifier.runs import METHODS, SCHEMES  # noqa: E402

#: the matrix's defaults (benchmarks/README.md explains the choice)
DEFAULTS = {
    "iters": 100,
    "nsamples": 128,
    "seqlen": 256,
    "batch_size": 8,
    "eval_tokens": 32768,
    "eval_seq_len": 256,
    "threads": 1,
}
_lock = threading.Lock()


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = ap.add_argument
    a("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    a("--schemes", nargs="+", choices=list(SCHEMES), default=list(SCHEMES))
    a("--seeds", nargs="+", type=int, default=[0, 1, 2])
    for key, value in DEFAULTS.items():
        a(
            f"--{key.replace('_', '-')}",
            type=int,
            default=value,
            help=f"default {value}",
        )
    a(
        "--eval-text",
        choices=("heldout", "validation"),
        default="heldout",
        help="heldout: the shipped held-out text (reported numbers); validation: "
        "the tail of the calibration text (for choosing defaults; never tune on "
        "held-out)",
    )
    a(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="VSRAQ option added to every routing method, e.g. margin=0.1 "
        "(part of the run id)",
    )
    a(
        "--model",
        default=None,
        help="a model folder, or a shipped model's name (qwen3_moe, deepseek_v3); "
        "default: the first shipped model",
    )
    a("--jobs", type=int, default=1, help="cells run at once (each one thread)")
    a("--run-id", default=None, help="default: derived from the settings")
    a(
        "--other-cpu",
        action="store_true",
        help="add cells to a run begun on another CPU model (refused by default: "
        "the same cell's numbers differ between CPU models, and the report pairs "
        "a run's cells with each other)",
    )
    a("--dry-run", action="store_true", help="list the cells to run and stop")
    return ap.parse_args(argv)


def settings_of(args: argparse.Namespace) -> dict:
    return {
        **{k: getattr(args, k) for k in DEFAULTS},
        "eval_text": args.eval_text,
        "options": dict(args.option),
        "model": args.model,
    }


def run_id_of(settings: dict) -> str:
    s = settings
    rid = (
        f"it{s['iters']}-n{s['nsamples']}x{s['seqlen']}-b{s['batch_size']}"
        f"-e{s['eval_tokens']}x{s['eval_seq_len']}"
    )
    if s["eval_text"] != "heldout":
        rid += f"-{s['eval_text']}"
    if s["options"] or s["model"]:
        extra = json.dumps([s["options"], s["model"]], sort_keys=True)
        rid += "-" + hashlib.sha1(extra.encode()).hexdigest()[:8]
    return rid


def _cpu_model() -> str:
    """This machine's CPU model name (a run's cells pair only on one)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return platform.processor()
    return ""


def _machine() -> dict:
    import torch

    return {"nproc": os.cpu_count(), "cpu": _cpu_model(), "torch": torch.__version__}


def _open_run(
    run_dir: Path, settings: dict, command: str, other_cpu: bool = False
) -> None:
    meta = run_dir / "run.json"
    if meta.exists():
        old = json.loads(meta.read_text())
        began, here = old.get("machine", {}).get("cpu"), _cpu_model()
        if began and began != here and not other_cpu:
            sys.exit(
                f"run.py: {run_dir} was begun on a {began!r} CPU and this one is "
                f"{here!r}: the report pairs a run's cells with each other, and the "
                "same cell gives other numbers on another CPU model (its float "
                "kernels round differently), so pass another --run-id and rerun "
                "the baseline there, or --other-cpu to add the cells anyway"
            )
        if old["settings"] != settings:
            diff = {
                k: (old["settings"].get(k), v)
                for k, v in settings.items()
                if old["settings"].get(k) != v
            }
            sys.exit(
                f"run.py: {run_dir} holds cells with other settings {diff} "
                "(old, new); pass another --run-id"
            )
        if command not in old["commands"]:
            old["commands"].append(command)
            meta.write_text(json.dumps(old, indent=1) + "\n")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"settings": settings, "commands": [command], "machine": _machine()}
    meta.write_text(json.dumps(doc, indent=1) + "\n")


def cell_name(method: str, scheme: str, seed: int) -> str:
    return f"{method}__{scheme}__s{seed}"


def _run_cell(run_dir: Path, spec: dict, log: Path) -> tuple[dict | None, float]:
    name = cell_name(spec["method"], spec["scheme"], spec["seed"])
    work = run_dir / "work" / name
    partial = work / "result.json"
    cmd = [
        sys.executable,
        str(HERE / "cell.py"),
        "--spec",
        json.dumps(spec),
        "--result",
        str(partial),
        "--work",
        str(work),
    ]
    work.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not partial.exists():
        return None, wall
    doc = json.loads(partial.read_text())
    doc["peak_rss_mb"] = usage.ru_maxrss / 1024  # the cell's process, in MiB
    doc["wall_seconds"] = wall
    doc["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    doc["cpu"] = _cpu_model()
    final = run_dir / f"{name}.json"
    tmp = final.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    tmp.rename(final)  # a cell file exists only once complete
    shutil.rmtree(work, ignore_errors=True)
    return doc, wall


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_of(args)
    run_dir = RUNS / (args.run_id or run_id_of(settings))
    cells = [
        {**settings, "method": m, "scheme": s, "seed": seed}
        for s in args.schemes
        for seed in args.seeds
        for m in args.methods
    ]
    todo = [
        c
        for c in cells
        if not (
            run_dir / f"{cell_name(c['method'], c['scheme'], c['seed'])}.json"
        ).exists()
    ]
    print(
        f"run {run_dir}: {len(cells)} cells, {len(cells) - len(todo)} done, "
        f"{len(todo)} to run ({args.jobs} at a time)",
        flush=True,
    )
    if args.dry_run:
        for c in todo:
            print("  " + cell_name(c["method"], c["scheme"], c["seed"]))
        return 0
    command = "python benchmarks/run.py " + shlex.join(argv or sys.argv[1:])
    _open_run(run_dir, settings, command, other_cpu=args.other_cpu)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    started, done, failed = time.perf_counter(), [0], []

    def one(spec: dict) -> None:
        name = cell_name(spec["method"], spec["scheme"], spec["seed"])
        doc, wall = _run_cell(run_dir, spec, logs / f"{name}.log")
        with _lock:
            done[0] += 1
            elapsed = time.perf_counter() - started
            eta = elapsed / done[0] * (len(todo) - done[0])
            if doc is None:
                failed.append(name)
                print(
                    f"[{done[0]}/{len(todo)}] {name}: FAILED after {wall:.0f} s "
                    f"(see {logs / (name + '.log')})",
                    flush=True,
                )
                return
            e = doc["eval"]
            print(
                f"[{done[0]}/{len(todo)}] {name}: "
                f"quant {doc['quantization']['seconds']:.0f} s, "
                f"cell {wall:.0f} s, jaccard {e['mean_jaccard']:.4f}, "
                f"ppl {e['perplexity']:.3f} (oracle {e['oracle_perplexity']:.3f}, "
                f"ref {e['reference_perplexity']:.3f}), kl {e['kl']:.5f}; "
                f"ETA {eta / 60:.0f} min",
                flush=True,
            )

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, todo))
    print(
        f"finished {done[0] - len(failed)} cells in "
        f"{(time.perf_counter() - started) / 60:.1f} min; failed: {failed or 'none'}",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
