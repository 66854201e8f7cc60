"""One llm-compressor import per test session, and settings that keep AutoRound
fast on a shared 2-core machine."""

from __future__ import annotations

import gc

import pytest
import torch


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


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny matmuls with 2 threads on oversubscribed cores
    spend most of their time waiting (measured 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")
