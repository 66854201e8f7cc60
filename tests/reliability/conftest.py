"""Fixtures of the reliability tests.

The host tests reuse the AutoRound and llm-compressor integration tests' helpers
(``autoround_helpers``, ``llmc_helpers``) and fixtures (transformers patches
restored, frozen gc, one thread, a temporary working directory), loaded from their
files rather than copied. Nothing here is autouse: the pure tests stay host-free; a
host test module opts in with ``pytestmark = pytest.mark.usefixtures("host_env")``.
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


def _fixtures_of(path: Path) -> dict:
    """The fixtures of another conftest, re-declared without autouse."""
    spec = importlib.util.spec_from_file_location(f"_conftest_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = {}
    for name, value in vars(module).items():
        function = getattr(value, "_fixture_function", None)
        marker = getattr(value, "_fixture_function_marker", None)
        if function is not None and marker is not None:
            out[name] = pytest.fixture(scope=marker.scope, name=name)(function)
    return out


_AUTOROUND = _fixtures_of(TESTS / "integration/autoround/conftest.py")
_LLMC = _fixtures_of(TESTS / "integration/llmcompressor/conftest.py")
globals().update({**_AUTOROUND, **_LLMC})


@pytest.fixture
def host_env(request):
    """What the AutoRound integration tests run under (their conftest's fixtures:
    transformers patches restored, cheap gc, a temporary working directory)."""
    for name in _AUTOROUND:
        request.getfixturevalue(name)


@pytest.fixture
def llmc_env(request, host_env):
    """... and what the llm-compressor tests add (one llm-compressor import per
    session, then a frozen gc)."""
    for name in _LLMC:
        request.getfixturevalue(name)
