"""Checks shared by the sub-command unit tests."""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest


def check_help(module: ModuleType, capsys: pytest.CaptureFixture) -> None:
    """The sub-command's parser on its own: every option is explained, ``--help``
    exits 0 with a usage line, and the parser is wired to a function."""
    sub = argparse.ArgumentParser(prog="vsraq").add_subparsers()
    parser = module.add_parser(sub)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, action.option_strings
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert callable(parser.get_default("func"))
