"""Fixtures of the host tests, declared once and imported by the conftests that use
them (integration/autoround and integration/llmcompressor switch them on for every
test; reliability host modules opt in with ``usefixtures("host_env")`` or
``usefixtures("llmc_env")``).

- AutoRound patches transformers' MoE classes process-wide when it loads a model
  from a directory (``apply_model_monkey_patches``); they are restored after each
  test so that other tests still build the stock modules.
- AutoRound writes work files (offloaded weights, default output) relative to the
  working directory: each test runs in its own ``tmp_path``.
- AutoRound calls ``gc.collect()`` after every block (~17 times per tiny run); in a
  test process holding torch + transformers each call scans every object (0.2-0.5 s
  on 2 busy cores, half of a tiny run). Freezing the objects alive before the test
  (``gc.freeze``, undone afterwards) leaves AutoRound's results unchanged and its
  collections cheap.
- llm-compressor is imported once per session (slow, prints), then the interpreter's
  objects are frozen for the same reason.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def restore_transformers_patches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo AutoRound's process-wide transformers patches after the test."""
    from auto_round.modeling.unfused_moe import MODEL_CONFIG
    from transformers import conversion_mapping, modeling_utils

    for cfg in MODEL_CONFIG.values():
        for orig, _custom in cfg.get("block_patch", []):
            module_path, name = orig.rsplit(".", 1)
            try:
                module = importlib.import_module(module_path)
            except ImportError:
                continue
            monkeypatch.setattr(module, name, getattr(module, name))
    name = "get_checkpoint_conversion_mapping"
    saved = {m: m.__dict__.get(name) for m in (conversion_mapping, modeling_utils)}
    yield
    for module, value in saved.items():
        if value is None:
            module.__dict__.pop(name, None)
        else:
            setattr(module, name, value)


@pytest.fixture(scope="module")
def cheap_gc() -> Iterator[None]:
    """Freeze the objects alive at the start of the module (see above)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in its own temporary working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def llmcompressor_imported() -> Iterator[None]:
    """Import llm-compressor once, then freeze the interpreter's objects: AutoRound
    calls ``gc.collect()`` several times per layer, which otherwise walks the
    ~millions of objects the imports created (measured: 0.3 s per call)."""
    import llmcompressor  # noqa: F401  (slow, prints; once per session)
    from llmcompressor.modifiers.autoround import AutoRoundModifier  # noqa: F401

    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per session for the tiny checkpoints tests save and reuse."""
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture
def host_env(
    restore_transformers_patches: None, cheap_gc: None, in_tmp_dir: Path
) -> None:
    """What an AutoRound run needs in a test: transformers patches restored, cheap
    gc, a temporary working directory."""


@pytest.fixture
def llmc_env(host_env: None, llmcompressor_imported: None) -> None:
    """... and what an llm-compressor run adds (one import, then a frozen gc)."""
