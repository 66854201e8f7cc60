"""Fixtures of the AutoRound integration tests.

- AutoRound patches transformers' MoE classes process-wide when it loads a model
  from a directory (``apply_model_monkey_patches``); they are restored after each
  test so that other tests still build the stock modules.
- AutoRound writes work files (offloaded weights, default output) relative to the
  working directory: each test runs in its own ``tmp_path``.
- One torch thread: set for the whole suite in tests/conftest.py.
- AutoRound calls ``gc.collect()`` after every block (~17 times per tiny run); in a
  test process holding torch + transformers each call scans every object (0.2-0.5 s
  on 2 busy cores, half of a tiny run). Freezing the objects alive before the test
  (``gc.freeze``, undone afterwards) leaves AutoRound's results unchanged and its
  collections cheap.
"""

from __future__ import annotations

import gc
import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def restore_transformers_patches(monkeypatch):
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


@pytest.fixture(autouse=True, scope="module")
def cheap_gc():
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

