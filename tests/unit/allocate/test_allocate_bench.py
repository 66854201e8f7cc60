"""benchmarks/allocate_bench.py's step names: a quantizer and a seed ride on the
variant (``q-alloc-3.0+vsraq_refit+s1``); mse and seed 0 keep the names of the
steps written before ``--methods`` and ``--seeds`` existed, so a finished run
resumes without redoing them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "benchmarks" / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


bench = _load("allocate_bench")
report = _load("allocate_report")


@pytest.mark.parametrize(
    "step, parts",
    [
        ("q-alloc-3.0", ("alloc-3.0", "mse", 0)),
        ("q-uniform-W4A16@64", ("uniform-W4A16@64", "mse", 0)),
        ("q-uniform-W4A16@64+vsraq", ("uniform-W4A16@64", "vsraq", 0)),
        ("q-freq-2.5+vsraq_refit+s2", ("freq-2.5", "vsraq_refit", 2)),
        ("q-autoscheme-3.0+s1", ("autoscheme-3.0", "mse", 1)),
    ],
)
def test_step_names_round_trip(step, parts):
    assert bench.split_step(step.removeprefix("q-")) == parts
    assert bench.step_name(*parts) == step


def test_unknown_tag_is_refused():
    with pytest.raises(SystemExit, match="unknown tag 'topk'"):
        bench.split_step("alloc-3.0+topk")


def test_report_labels():
    assert report._label({"variant": "alloc-3.0"}) == "alloc-3.0"
    assert (
        report._label({"variant": "alloc-3.0", "method": "vsraq", "seed": 1})
        == "alloc-3.0 +vsraq +s1"
    )


def _step(run: Path, variant: str, seed: int, gap: float, domains: dict,
          method: str = "mse") -> None:
    import json

    ref = 50.0
    d = {
        "variant": variant, "method": method, "seed": seed, "average_bits": 2.8,
        "quantize_cpu_seconds": 100.0,
        "eval": {
            "overall": {"perplexity": ref + gap, "reference_perplexity": ref,
                        "kl": 0.01, "disagreement": 0.05},
            "domains": {n: {"perplexity": p} for n, p in domains.items()},
        },
    }
    name = bench.step_name(variant, method, seed)
    (run / f"{name}.json").write_text(json.dumps(d))


def test_summary_target_over_seeds(tmp_path):
    import json

    (tmp_path / "reference.json").write_text(
        json.dumps({"domains": {"a": {"perplexity": 1.0}, "b": {"perplexity": 1.0}}})
    )
    (tmp_path / "measure.json").write_text(json.dumps({"cpu_seconds": 40.0}))
    for s, noise in enumerate((0.0, 0.1)):
        _step(tmp_path, "autoscheme-3.0", s, 1.0 + noise, {"a": 60, "b": 70})
        _step(tmp_path, "uniform-W2A16G64", s, 2.0, {"a": 61, "b": 71})
        # 0.75x AutoScheme's gap over the seeds, domain b worse than uniform
        _step(tmp_path, "alloc-3.0", s, 0.75 * (1.0 + noise), {"a": 60, "b": 72})
    text = report.summary(tmp_path)
    row = next(r for r in text.splitlines() if r.startswith("| 3.0 | mse | alloc-3.0 |"))
    assert row == "| 3.0 | mse | alloc-3.0 | 2 | 0.750x | b | no |"
    assert "| autoscheme-3.0 | mse | 2 | 2.8000 | 1.050 ± 0.071 |" in text
    assert "measure: 40 CPU s = 0.40x one uniform mse quantization" in text
    assert "(seed 0, mean 100 CPU s, 1 uniform schemes)" in text
