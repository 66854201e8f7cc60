"""One llm-compressor import per test session, and settings that keep AutoRound
fast on a shared 2-core machine."""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(scope="session", autouse=True)
def llmcompressor_session():
    """Import the hosts once, then freeze the interpreter's objects: AutoRound
    calls ``gc.collect()`` several times per layer, which otherwise walks the
    ~millions of objects the imports created (measured: 0.3 s per call)."""
    import llmcompressor  # noqa: F401  (slow, prints; once per session)
    from llmcompressor.modifiers.autoround import AutoRoundModifier  # noqa: F401

    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")
