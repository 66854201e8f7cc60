"""benchmarks/run.py: a run's cells are paired with each other by the report, so
cells from another CPU model (whose float kernels round differently: the same
mse cell measured 0.01543 and 0.01503 disagreement on two CPU models) are not
added to it silently."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import run  # noqa: E402

SETTINGS = {"iters": 2, "nsamples": 4, "seqlen": 8, "options": {}, "model": None}


def _begun_on(tmp_path: Path, cpu: str) -> Path:
    meta = tmp_path / "run.json"
    machine = {**run._machine(), "cpu": cpu}
    meta.write_text(json.dumps({"settings": SETTINGS, "commands": ["a"],
                                "machine": machine}))
    return meta


def test_a_run_begun_on_another_cpu_is_refused(tmp_path):
    _begun_on(tmp_path, "Some Other CPU 9000")
    with pytest.raises(SystemExit) as err:
        run._open_run(tmp_path, SETTINGS, "b")
    msg = str(err.value)
    assert "Some Other CPU 9000" in msg and run._cpu_model() in msg
    assert "--run-id" in msg and "--other-cpu" in msg


def test_other_cpu_adds_the_cells_and_records_the_command(tmp_path):
    meta = _begun_on(tmp_path, "Some Other CPU 9000")
    run._open_run(tmp_path, SETTINGS, "b", other_cpu=True)
    assert json.loads(meta.read_text())["commands"] == ["a", "b"]


def test_the_same_cpu_resumes(tmp_path):
    meta = _begun_on(tmp_path, run._cpu_model())
    run._open_run(tmp_path, SETTINGS, "b")
    assert json.loads(meta.read_text())["commands"] == ["a", "b"]
