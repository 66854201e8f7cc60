"""The GPU run, as one command: VSRAQ's cost and device placement on CUDA.

On a CUDA machine that has only torch and transformers, this installs the carried
wheels (scripts/gpu-wheels.txt, downloaded by scripts/download_gpu_wheels.sh) into a
private folder, then on the GPU:

1. quantizes the shipped model with AutoRound's own loss (mse) and with VSRAQ
   (W4A16, groups of 64, llm_compressor export), timing each and recording peak
   GPU memory (``torch.cuda.max_memory_allocated``);
2. runs one llm-compressor ``oneshot`` with ``VSRAQModifier`` (same scheme);
3. checks that every router-logit record (reference forward, tuning, look-ahead),
   every cached reference logit and every router re-fit solve was on the GPU, and
   that the look-ahead layers' weights were there when tuning started: no silent
   CPU fallback;
4. writes the routing report of the three checkpoints (``vsraq report``'s code) and
   their ``vsraq check-serving`` verdicts.

Writes into --out: ``gpu_check.json`` (rewritten after every step, ``complete``
false until the end, so a run cut short still leaves its figures), routing.json,
routing.txt. Exit status: 0 all checks passed, 1 a device check failed, 2 bad
arguments, no CUDA device, or missing wheels. ``--dry-run`` checks the arguments and
the wheel folder only (any machine). ``--device cpu --skip-install`` rehearses every
step on a CPU in an environment that has the hosts (the project's venv).

    python scripts/gpu_check.py --out "$OUT" --wheels .whl
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_support import (
    HOSTS,
    ROOT,
    WHEEL_LIST,
    CheckError,
    Probe,
    install,
    not_installed,
    require_modules,
    wheel_files,
    wheel_requirements,
)

IGNORE = ["lm_head", "re:.*mlp.gate$"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_check.py",
        description="Quantize the shipped MoE with AutoRound (mse and vsraq) and "
        "one llm-compressor oneshot with VSRAQModifier on a CUDA GPU; check that "
        "look-ahead layers and cached reference logits stay on the GPU; write "
        "times, peak GPU memory and the routing report to --out.",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder for gpu_check.json and the routing report "
        "(created; must be empty if it exists)",
    )
    p.add_argument(
        "--wheels",
        default=str(ROOT / ".whl"),
        metavar="DIR",
        help="folder of the wheels listed in scripts/gpu-wheels.txt "
        "(default: .whl/ at the repository root)",
    )
    p.add_argument(
        "--iters",
        type=_positive,
        default=50,
        help="tuning steps per block (default 50: the three runs fit one "
        "10-minute command with room to spare)",
    )
    p.add_argument(
        "--nsamples",
        type=_positive,
        default=64,
        help="calibration samples of --seqlen tokens (default 64)",
    )
    p.add_argument(
        "--seqlen",
        type=_positive,
        default=256,
        help="tokens per calibration sample (default 256, as the demo)",
    )
    p.add_argument(
        "--eval-tokens",
        type=_positive,
        default=16384,
        help="held-out tokens for the routing report (default 16384)",
    )
    p.add_argument(
        "--device",
        default="cuda",
        help="torch device (default cuda; cpu only for a rehearsal)",
    )
    p.add_argument(
        "--skip-install",
        action="store_true",
        help="use the packages already importable instead of --wheels",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the arguments and the wheel folder, run nothing",
    )
    return p.parse_args(argv)


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return n


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckError(f"--out {out} exists and is not an empty folder")


def _cuda(device: str) -> Any:
    import torch

    return torch.cuda if device.startswith("cuda") else None


def timed(device: str, fn: Any) -> tuple[Any, float, int | None]:
    """fn() with wall seconds and peak GPU memory (bytes) of the call."""
    cuda = _cuda(device)
    if cuda:
        cuda.synchronize()
        cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    if cuda:
        cuda.synchronize()
    peak = cuda.max_memory_allocated() if cuda else None
    return result, time.perf_counter() - start, peak


def autoround_run(loss: str, args: argparse.Namespace, data: list, out: Path) -> Path:
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vsraq_modifier import data as shipped
    from vsraq_modifier.integrations.autoround import autoround

    model_dir = shipped.shipped_model_dir()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    kw = dict(
        scheme="W4A16",
        group_size=64,
        dataset=data,
        nsamples=len(data),
        seqlen=int(data[0].shape[-1]),
        batch_size=8,
        seed=0,
        iters=args.iters,
        device_map=args.device,
        enable_torch_compile=False,
    )
    ar = (
        AutoRound(model, tok, **kw)
        if loss == "mse"
        else autoround(model, tok, loss=loss, **kw)
    )
    ar.quantize_and_save(str(out), format="llm_compressor")
    (config,) = out.rglob("config.json")  # AutoRound adds a sub-folder
    return config.parent


def oneshot_run(args: argparse.Namespace, data: list, out: Path) -> Path:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier import data as shipped

    model_dir = shipped.shipped_model_dir()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.to(args.device)
    ids = torch.cat(data)
    ds = Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()}
    )
    weights = dict(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=64
    )
    recipe = VSRAQModifier(
        config_groups={"g": {"targets": ["Linear"], "weights": weights}},
        ignore=IGNORE,
        iters=args.iters,
        loss="vsraq",
    )
    oneshot(
        model=model,
        processor=AutoTokenizer.from_pretrained(str(model_dir)),
        dataset=ds,
        recipe=recipe,
        num_calibration_samples=len(data),
        max_seq_length=ids.shape[1],
        shuffle_calibration_samples=False,
    )
    model.save_pretrained(out, save_compressed=True)
    return out


def routing_report(args: argparse.Namespace, ckpts: dict[str, Path], out: Path) -> None:
    from vsraq_modifier import data as shipped
    from vsraq_modifier.metrics import evaluate_routing, format_table
    from vsraq_modifier.metrics.loading import load_model, load_token_ids

    ref_dir = shipped.shipped_model_dir()
    ids = load_token_ids(shipped.heldout_text_path(), ref_dir, args.eval_tokens)
    ref = load_model(ref_dir, device=args.device)

    def loader(path: Path):
        return lambda: load_model(path, device=args.device).model

    report = evaluate_routing(
        ref.model,
        [(k, str(p), loader(p)) for k, p in ckpts.items()],
        ids,
        seq_len=256,
        reference_path=str(ref_dir),
        progress=False,
    )
    report.write_json(out / "routing.json")
    (out / "routing.txt").write_text(format_table(report) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        check_out(out)
        pins = wheel_requirements()
        missing_hosts = [h for h in HOSTS if h not in pins]
        if missing_hosts:
            raise CheckError(f"{WHEEL_LIST} does not name {missing_hosts}")
        wheels, missing = wheel_files(Path(args.wheels), pins)
        if args.dry_run:
            print(
                f"gpu_check: {len(wheels)} of {len(pins)} wheels in {args.wheels}"
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
            absent = not_installed(missing)
            if missing:
                print(
                    "gpu_check: of those, this Python lacks: "
                    + (", ".join(absent) if absent else "none")
                )
            print(
                f"gpu_check: would write to {out} (iters {args.iters}, nsamples "
                f"{args.nsamples}, seqlen {args.seqlen}, device {args.device})"
            )
            return 0
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise CheckError(
                "no CUDA device (torch.cuda.is_available() is False); run "
                "this on a CUDA machine, or --dry-run to check the inputs"
            )
        if not args.skip_install:
            absent = not_installed(missing)  # the image may have them (--light)
            if absent:
                raise CheckError(
                    f"no wheel in {args.wheels} for {', '.join(absent)}, and this "
                    "Python lacks them; run scripts/download_gpu_wheels.sh"
                )
            target = Path(tempfile.mkdtemp(prefix="vsraq-gpu-wheels-"))
            atexit.register(shutil.rmtree, target, True)
            install(wheels, target)
        sys.path.insert(0, str(ROOT))
        require_modules()
    except CheckError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    return measure(args, out)


def measure(args: argparse.Namespace, out: Path) -> int:
    import torch

    import vsraq_modifier.integrations.autoround  # noqa: F401  (registers VSRAQ)
    from vsraq_modifier import calibration
    from vsraq_modifier import data as shipped
    from vsraq_modifier.serving import check_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vsraq-gpu-ckpt-"))  # checkpoints stay here
    atexit.register(shutil.rmtree, work, True)
    probe = Probe()
    probe.install()
    result: dict[str, Any] = {
        "complete": False,
        "args": vars(args),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if _cuda(args.device) else None,
        "runs": {},
    }

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")

    ids = calibration.split_tokens(
        calibration.text_token_ids(
            shipped.calibration_text_path(), shipped.shipped_model_dir()
        ),
        "calibration",
    )
    data = calibration.calibration_samples(
        ids, nsamples=args.nsamples, seqlen=args.seqlen, seed=0
    )
    ckpts: dict[str, Path] = {}
    steps = [
        ("mse", lambda: autoround_run("mse", args, data, work / "mse")),
        ("vsraq", lambda: autoround_run("vsraq", args, data, work / "vsraq")),
        ("oneshot-vsraq", lambda: oneshot_run(args, data, work / "oneshot")),
    ]
    for label, step in steps:
        probe.run = label
        path, seconds, peak = timed(args.device, step)
        ckpts[label] = path
        serving = check_checkpoint(path)
        result["runs"][label] = {
            "seconds": round(seconds, 2),
            "peak_gpu_bytes": peak,
            "serving": serving.status,
        }
        memory = "-" if peak is None else f"{peak / 2**20:.0f} MiB"
        print(
            f"gpu_check: {label}: {seconds:.1f} s, peak GPU memory {memory}, "
            f"vLLM: {serving.status}",
            flush=True,
        )
        save()
    runs = result["runs"]
    result["time_ratio_vsraq_over_mse"] = round(
        runs["vsraq"]["seconds"] / runs["mse"]["seconds"], 3
    )
    result["devices"] = probe.seen
    failures = probe.failures(args.device)
    result["device_failures"] = failures
    save()
    routing_report(args, ckpts, out)
    result["complete"] = True
    save()
    print((out / "routing.txt").read_text())
    for line in failures:
        print(f"gpu_check: DEVICE CHECK FAILED: {line}", file=sys.stderr)
    print(
        f"gpu_check: vsraq/mse time {result['time_ratio_vsraq_over_mse']}x; "
        f"device checks {'FAILED' if failures else 'passed'}; wrote {out}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
