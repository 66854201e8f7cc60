"""The README's install-free command, run as written: ``vsraq demo --out demo``
from a fresh working directory (a relative ``--out`` once lost both checkpoints:
the runs changed the working directory before resolving it). Tiny settings are
appended so it takes seconds; the paths stay exactly the README's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--iters", "1", "--nsamples", "2", "--seqlen", "32"]
TINY += ["--eval-tokens", "256", "--no-oracle", "--no-progress"]


def _readme_demo_command() -> list[str]:
    """The ``vsraq demo ...`` command of the README's quick start."""
    readme = (ROOT / "README.md").read_text()
    found = re.findall(r"(vsraq demo [^\n`&|;]*)", readme)
    assert found, "the README has no vsraq demo command"
    return shlex.split(found[0])


@pytest.mark.slow
def test_readme_demo_with_a_relative_out_from_a_fresh_directory(tmp_path):
    command = _readme_demo_command()
    assert command == ["vsraq", "demo", "--out", "demo"]  # relative, as written
    exe = Path(sys.executable).parent / command[0]
    run = subprocess.run(
        [str(exe), *command[1:], *TINY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    demo = tmp_path / "demo"
    for path in ("mse/config.json", "vsraq/config.json", "routing.json", "demo.json"):
        assert (demo / path).is_file(), path
    assert not (demo / ".work").exists()  # the work files went, the results stayed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # nothing else
