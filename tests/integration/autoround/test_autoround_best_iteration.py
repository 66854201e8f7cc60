"""best_iteration: the iteration AutoRound keeps is chosen on its own loss (the
default safeguard) or on host + routing loss; read from AutoRound's own log line,
so the test fails if AutoRound stops comparing the values the session gives it."""

from __future__ import annotations

import logging
import re

import pytest

from tests.helpers.autoround import quantize, small_moe

ITERS = 8
#: AutoRound's per-block line: "... loss iter 0: X -> iter k: Y"
_LINE = re.compile(r"loss iter 0: ([0-9.e+-]+) -> iter (\d+): ([0-9.e+-]+)")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def autoround_lines():
    handler = _Lines()
    log = logging.getLogger("autoround")
    log.addHandler(handler)
    yield handler.lines
    log.removeHandler(handler)


@pytest.mark.parametrize("rule", ["host", "total"])
def test_autoround_keeps_the_iteration_the_rule_picks(rule, autoround_lines):
    ar = quantize("vsraq", small_moe(seed=3), iters=ITERS, best_iteration=rule)
    reports = ar.alg_composer.block_quantizer.reports
    kept = [int(m[2]) for m in map(_LINE.search, autoround_lines) if m]
    assert len(kept) == len(reports) == 2, autoround_lines
    for report, autoround_kept in zip(reports, kept):
        assert report.kept_on == rule and report.iters == ITERS
        # the iteration AutoRound says it kept is the one the rule picks
        assert autoround_kept == report.kept_iter
        if rule == "host":
            assert report.host_kept == report.host_best
