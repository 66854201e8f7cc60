"""sha256 of the shipped model's mse and vsraq checkpoints at fixed settings: the
byte-identity check of a refactoring (run it before and after; same digests mean
the same checkpoints).

    python scripts/checkpoint_digest.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from vsraq_modifier import data
from vsraq_modifier.calibration import calibration_samples, split_tokens, text_token_ids
from vsraq_modifier.runs import SCHEMES, quantize_checkpoint


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="default: 0")
    ap.add_argument("--methods", nargs="+", default=["mse", "vsraq"])
    ap.add_argument("--scheme", choices=list(SCHEMES), default="W4A16")
    ap.add_argument("--iters", type=int, default=30, help="default: 30")
    ap.add_argument("--nsamples", type=int, default=16, help="default: 16")
    ap.add_argument("--seqlen", type=int, default=128, help="default: 128")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = data.shipped_model_dir()
    ids = split_tokens(
        text_token_ids(data.calibration_text_path(), model), "calibration"
    )
    digests = {}
    for seed in args.seeds:
        samples = calibration_samples(
            ids, nsamples=args.nsamples, seqlen=args.seqlen, seed=seed
        )
        for method in args.methods:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "ckpt"
                quantize_checkpoint(
                    model,
                    out,
                    method=method,
                    scheme=args.scheme,
                    dataset=samples,
                    seed=seed,
                    iters=args.iters,
                    batch_size=8,
                )
                h = hashlib.sha256()
                for f in sorted(out.glob("*.safetensors")):
                    h.update(f.read_bytes())
                digests[f"{method}-seed{seed}"] = h.hexdigest()
                print(f"{method} seed {seed}: {h.hexdigest()}", flush=True)
    print(json.dumps(digests, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
