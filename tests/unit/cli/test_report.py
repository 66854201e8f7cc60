"""`vsraq report --help`: every option is explained (runs and bad input:
tests/integration and tests/reliability)."""

from __future__ import annotations

from tests.helpers.cli import check_help
from vsraq_modifier.cli import report


def test_help_explains_every_option(capsys) -> None:
    check_help(report, capsys)
