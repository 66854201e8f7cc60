"""Helpers of scripts/gpu_check.py: the wheel list, the private install of the
carried wheels, and the probe that records where the VSRAQ code ran.

The probe wraps three methods of ``vsraq_modifier.session`` in this process only
(nothing in the package is changed): ``BlockSession._on_record`` (every router-logit
record), ``BlockSession.start`` (look-ahead layers' weights when tuning starts) and
``ReferenceStore.add`` (the cached reference logits).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEEL_LIST = ROOT / "scripts" / "gpu-wheels.txt"
HOSTS = ("auto-round", "llmcompressor", "compressed-tensors")
#: modules the run imports that the wheels provide
NEEDED = ("auto_round", "llmcompressor", "compressed_tensors", "datasets", "accelerate")


class CheckError(Exception):
    """A refusal named in one line (exit status 2)."""


def wheel_requirements(path: Path = WHEEL_LIST) -> dict[str, str]:
    """Normalised package name -> pinned version, from the requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", line)
        if not m:
            raise CheckError(f"{path}: {line!r} is not NAME==VERSION")
        pins[_norm(m[1])] = m[2]
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_files(folder: Path, pins: dict[str, str]) -> tuple[list[Path], list[str]]:
    """The folder's wheels of the pinned versions, and the requirements without one."""
    found, missing = [], []
    files = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    for name, version in pins.items():
        hits = [
            f
            for f in files
            if f.name.split("-")[:2]
            and _norm(f.name.split("-")[0]) == name
            and f.name.split("-")[1] == version
        ]
        (found.extend(hits[:1]) if hits else missing.append(f"{name}=={version}"))
    return found, missing


def not_installed(requirements: list[str]) -> list[str]:
    """The ``NAME==VERSION`` requirements whose distribution this Python lacks
    (at any version: an image's own datasets stack replaces the carried one)."""
    from importlib.metadata import PackageNotFoundError, version

    absent = []
    for req in requirements:
        try:
            version(req.split("==")[0])
        except PackageNotFoundError:
            absent.append(req)
    return absent


def install(wheels: list[Path], target: Path) -> None:
    """pip-install the wheels (no index, no dependency resolution) into target,
    then put it first on sys.path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--target",
        str(target),
        *map(str, wheels),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:]
        raise CheckError(f"pip could not install the wheels: {' '.join(tail)}")
    sys.path.insert(0, str(target))


def require_modules() -> None:
    import importlib

    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise CheckError(
                f"cannot import {name} ({e}); add its wheel and its "
                "dependencies' to --wheels (scripts/download_gpu_wheels.sh)"
            ) from None


class Probe:
    """Devices seen by the VSRAQ code in each run (its methods wrapped in this
    process only): router-logit records by phase and router (own / look-ahead),
    cached reference logits, the look-ahead layers' weights when tuning starts
    (checked for AutoRound, which moves them; llm-compressor onloads them itself,
    so there the look-ahead records show where they ran), and the router
    re-fit's float64 solves (on the router's CUDA device)."""

    def __init__(self) -> None:
        self.run = "none"
        self.seen: dict[str, dict[str, dict[str, int]]] = {}

    def count(self, what: str, device: Any) -> None:
        table = self.seen.setdefault(self.run, {}).setdefault(what, {})
        key = str(getattr(device, "type", device))
        table[key] = table.get(key, 0) + 1

    def install(self) -> None:
        from vsraq_modifier.refit import fit
        from vsraq_modifier.session import block

        session, store = block.BlockSession, block.ReferenceStore
        for cls, name in ((session, "_on_record"), (session, "start"), (store, "add")):
            if not callable(getattr(cls, name, None)):
                raise CheckError(
                    f"{cls.__name__}.{name} is gone from vsraq_modifier; "
                    "update the probes in scripts/gpu_check.py"
                )
        if not callable(getattr(fit, "fit64", None)):
            raise CheckError(
                "refit.fit.fit64 is gone from vsraq_modifier; update the probes "
                "in scripts/gpu_check.py"
            )
        if not isinstance(getattr(store(), "_per_key", None), dict):
            raise CheckError(
                "ReferenceStore._per_key is gone from vsraq_modifier; update the "
                "probes in scripts/gpu_check.py"
            )
        on_record, start, add, probe = (
            session._on_record,
            session.start,
            store.add,
            self,
        )

        def probed_on_record(self, record):
            for key, logits in record.logits.items():
                kind = "look-ahead" if key == block.AHEAD else "own"
                probe.count(f"router logits, {self.phase.value}, {kind}", logits.device)
            return on_record(self, record)

        def probed_start(self, *args, **kwargs):
            for layer in self.path.layers if self.path is not None else ():
                for p in layer.parameters():
                    probe.count("look-ahead weights at tuning start", p.device)
            return start(self, *args, **kwargs)

        def probed_add(self, record):
            add(self, record)
            for rows in self._per_key.values():
                probe.count("cached reference logits", rows[-1].device)

        fit64 = fit.fit64

        def probed_fit64(x, *args, **kwargs):
            probe.count("router re-fit solves", x.device)
            return fit64(x, *args, **kwargs)

        session._on_record, session.start = probed_on_record, probed_start
        store.add = probed_add
        fit.fit64 = probed_fit64

    def failures(self, device: str) -> list[str]:
        """What ran elsewhere than ``device``, or was never seen."""
        want, bad = device.split(":")[0], []
        expected = {
            "vsraq": (
                "cached reference logits",
                "look-ahead weights at tuning start",
                "router re-fit solves",
            ),
            "oneshot-vsraq": ("cached reference logits", "router re-fit solves"),
        }
        for run, names in expected.items():
            tables = self.seen.get(run, {})
            names = (*names, *(k for k in tables if k.startswith("router logits")))
            if not any(k.endswith("look-ahead") for k in tables):
                bad.append(f"{run}: no look-ahead router logits recorded")
            for name in names:
                table = tables.get(name, {})
                if not table or set(table) != {want}:
                    bad.append(f"{run}: {name}: {table or 'none'} (want all on {want})")
        return bad
