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
