"""benchmarks/refit_threshold.py: a stricter held-aside check, replayed from the
logs of cells run with any gain."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from refit_threshold import fits, main, table  # noqa: E402


def _cell(run: Path, name: str, scheme: str, logs: dict, evals: dict) -> None:
    run.mkdir(exist_ok=True)
    doc = {
        "scheme": scheme,
        "blocks": [{"refit": {f"L{k}": v}} for k, v in logs.items()],
        "eval": {"original_router": [{"layer": k, "gain": g} for k, g in evals.items()]},
    }
    (run / f"{name}__{scheme}__s0.json").write_text(json.dumps(doc))


def _log(before: float, after: float, se: float, kept: bool) -> str:
    verdict = "re-fitted" if kept else "kept the original"
    return (
        f"fit error 0.01 -> 0.009, held-aside Jaccard {before:.4f} -> {after:.4f} "
        f"(se {se:.4f}, 1016 tokens): {verdict}"
    )


def test_thresholds_refuse_the_gains_within_their_standard_error(tmp_path, capsys):
    run = tmp_path / "run"
    _cell(
        run,
        "vsraq_refit",
        "W4A16G64",
        {0: _log(0.95, 0.96, 0.002, True), 1: _log(0.95, 0.951, 0.002, True),
         2: _log(0.95, 0.94, 0.002, False)},
        {0: 0.004, 1: -0.0005, 2: 0.0},
    )
    _cell(run, "mse_refit", "NVFP4", {1: _log(0.9, 0.902, 0.003, True)}, {1: 0.001})
    # a log of the code before the standard error was logged is skipped
    _cell(run, "old", "W2A16G64", {0: "held-aside Jaccard 0.9 -> 0.95 (1016 tokens): "
                                      "re-fitted"}, {0: 0.01})
    found = fits([run])
    assert len(found) == 4 and sum(f.kept for f in found) == 3
    rows = table(found, (0.0, 1.0)).splitlines()[2:]
    # any gain keeps both weight-only fits, one of which loses on the evaluation text
    assert rows[0] == "| 0 | weight-only | 2 of 2 | +0.0035 | 0 | +0.0000 | 1 |"
    assert rows[1] == "| 0 | FP4 activations | 1 of 1 | +0.0010 | 0 | +0.0000 | 0 |"
    # one standard error refuses the gain of 0.001 (se 0.002) and 0.002 (se 0.003)
    assert rows[2] == "| 1 | weight-only | 1 of 2 | +0.0040 | 1 | -0.0005 | 0 |"
    assert rows[3] == "| 1 | FP4 activations | 0 of 1 | +0.0000 | 1 | +0.0010 | 0 |"
    assert main([str(run)]) == 0
    assert "4 routers of 2 cells" in capsys.readouterr().out
