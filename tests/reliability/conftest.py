"""Fixtures of the reliability tests.

The host tests reuse the AutoRound and llm-compressor integration tests' helpers
(``autoround_helpers``, ``llmc_helpers``) and fixtures (transformers patches
restored, frozen gc, one thread, a temporary working directory), loaded from their
files rather than copied. Nothing here is autouse: the pure tests stay host-free; a
host test module opts in with ``pytestmark = pytest.mark.usefixtures(*HOST)``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for sub in ("integration/autoround", "integration/llmcompressor"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))


def _fixtures_of(path: Path, names: dict[str, str]) -> dict:
    """The fixtures ``names`` (name -> scope) of another conftest, not autouse."""
    spec = importlib.util.spec_from_file_location(f"_conftest_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {
        name: pytest.fixture(scope=scope, name=name)(
            getattr(module, name)._fixture_function
        )
        for name, scope in names.items()
    }


globals().update(
    _fixtures_of(
        TESTS / "integration/autoround/conftest.py",
        {
            "restore_transformers_patches": "function",
            "cheap_gc": "module",
            "in_tmp_dir": "function",
            "one_thread": "module",
        },
    )
)
