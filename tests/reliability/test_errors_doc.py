"""docs/errors.md stays true: every test it names exists, every table row of the
error tables has its four columns and at least one test."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"
#: "tests/x.py::name" or a continuation "::name" (same file as the last path)
REF = re.compile(r"(tests/[\w/]+\.py)?::(\w+)")


def _tests_named(text: str) -> list[tuple[str, str]]:
    refs, current = [], None
    for path, name in REF.findall(text):
        current = path or current
        assert current, f"::{name} without a file before it"
        refs.append((current, name))
    return refs


def test_every_named_test_exists():
    refs = _tests_named(DOC.read_text())
    assert len(refs) > 60
    for path, name in refs:
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name}"


def test_every_error_row_has_cause_fix_and_test():
    rows = 0
    for table in DOC.read_text().split("\n\n"):
        lines = [ln for ln in table.splitlines() if ln.startswith("|")]
        if not lines or not re.match(
            r"\| error.* \| cause \| fix \| test \|$", lines[0]
        ):
            continue
        for line in lines[2:]:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert len(cells) == 4 and all(cells), line
            assert REF.search(cells[3]), line
            rows += 1
    assert rows > 50
