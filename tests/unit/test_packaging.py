"""The package is cheap to import and ships its post-import hook in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, **env: str) -> str:
    import os

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return out.stdout.strip()


def test_import_is_light() -> None:
    code = (
        "import sys, vsraq_modifier;"
        "print(sorted(m for m in ('llmcompressor', 'auto_round', 'torch')"
        " if m in sys.modules))"
    )
    assert _run(code) == "[]"


def test_hook_installed_at_startup_and_imports_nothing_heavy() -> None:
    code = (
        "import sys;"
        "print('_vsraq_modifier_hook' in sys.modules,"
        " any(type(f).__name__ == '_PostImportFinder' for f in sys.meta_path),"
        " 'torch' in sys.modules)"
    )
    assert _run(code) == "True True False"
    assert _run(code, VSRAQ_DISABLE_HOOK="1") == "True False False"


def test_wheel_ships_pth_and_hook(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("vsraq_modifier-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vsraq_modifier.pth" in names
    assert "_vsraq_modifier_hook.py" in names
    pth = zipfile.ZipFile(wheel).read("vsraq_modifier.pth").decode()
    assert pth.strip() == "import _vsraq_modifier_hook"
