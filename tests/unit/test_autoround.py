"""``python -m vsraq_modifier.autoround``: importing the module does nothing (it
only runs auto-round under ``__main__``; the command itself is tested in
tests/integration/autoround/test_autoround_cli.py)."""

from __future__ import annotations

import importlib
import sys


def test_importing_runs_nothing() -> None:
    before = set(sys.modules)
    importlib.import_module("vsraq_modifier.autoround")
    assert "auto_round.cli.main" not in set(sys.modules) - before
