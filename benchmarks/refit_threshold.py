"""What a stricter held-aside check would have done, from cells run with any gain.

The re-fit keeps a router's fit when its held-aside Jaccard gain exceeds
``router_refit_accept_se`` standard errors of that gain (0: any gain). Cells run
at 0 log, per router, the held-aside gain and its standard error, and record how
the kept router agrees with the reference on the evaluation text against the
original router on the same inputs (``eval.original_router``, refit_heldout.py).
For each threshold this prints, per kind of scheme, the fits it would still keep,
the evaluation-text gain of those, the gain it would give up, and how many kept
fits lose on the evaluation text. First order: a refused fit leaves its router
as it was, and the blocks after it are taken as unchanged.

    python benchmarks/refit_threshold.py benchmarks/runs/RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

_HELD = re.compile(
    r"Jaccard ([\d.]+) -> ([\d.]+) \(se ([\d.]+|nan), (\d+) tokens\): (.*)$"
)
THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class Fit:
    """One router's held-aside check and its evaluation-text gain."""

    cell: str
    layer: int
    weight_only: bool
    gain: float
    se: float
    kept: bool
    eval_gain: float


def fits(run_dirs: list[Path]) -> list[Fit]:
    """Every router of every re-fit cell in ``run_dirs`` whose log has the gain's
    standard error (cells of the code before it are skipped)."""
    out = []
    for run in run_dirs:
        for path in sorted(run.glob("*__s*.json")):
            cell = json.loads(path.read_text())
            records = cell["eval"].get("original_router", [])
            evals = {r["layer"]: r["gain"] for r in records}
            weight_only = "FP4" not in cell["scheme"]
            for block in cell["blocks"]:
                for name, text in (block.get("refit") or {}).items():
                    m = _HELD.search(text)
                    layer = int(name[1:].split()[0])
                    if m is None or layer not in evals:
                        continue
                    out.append(
                        Fit(
                            cell=f"{run.name}/{path.stem}",
                            layer=layer,
                            weight_only=weight_only,
                            gain=float(m[2]) - float(m[1]),
                            se=float(m[3]),
                            kept=m[5] == "re-fitted",
                            eval_gain=evals[layer],
                        )
                    )
    return out


def table(all_fits: list[Fit], thresholds: tuple[float, ...] = THRESHOLDS) -> str:
    """The markdown table: per threshold and kind of scheme, what is kept."""
    lines = [
        "| threshold (standard errors) | schemes | fits kept | their gain on the "
        "evaluation text | fits given up | gain given up | kept fits that lose |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in thresholds:
        for weight_only, label in ((True, "weight-only"), (False, "FP4 activations")):
            group = [f for f in all_fits if f.weight_only == weight_only and f.kept]
            if not group:
                continue
            # at 0 the logged decision (the logged Jaccards are rounded)
            keep = [f for f in group if k == 0 or f.gain > k * f.se]
            drop = [f for f in group if f not in keep]
            lose = [f for f in keep if f.eval_gain < 0]
            lines.append(
                f"| {k:g} | {label} | {len(keep)} of {len(group)} | "
                f"{sum(f.eval_gain for f in keep):+.4f} | {len(drop)} | "
                f"{sum(f.eval_gain for f in drop):+.4f} | {len(lose)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "runs", nargs="+", type=Path, help="run folders (benchmarks/runs/...)"
    )
    args = ap.parse_args(argv)
    found = fits(args.runs)
    if not found:
        ap.error("no re-fit cell with the held-aside gain's standard error in its log")
    cells = len({f.cell for f in found})
    print(f"{len(found)} routers of {cells} cells; sums are Jaccard gains over routers")
    print(table(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
