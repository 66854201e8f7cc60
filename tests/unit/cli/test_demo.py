"""`vsraq demo --help`: every option is explained (the sub-command's parser on
its own; runs and bad input: tests/integration and tests/reliability)."""

from __future__ import annotations

import argparse

import pytest

from vsraq_modifier.cli import demo


def test_help_explains_every_option(capsys) -> None:
    sub = argparse.ArgumentParser(prog="vsraq").add_subparsers()
    parser = demo.add_parser(sub)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, action.option_strings
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert callable(parser.get_default("func"))
