"""The defaults the docs print are the defaults the code uses (they drifted once:
docs/demo.md kept the demo's old iteration and sample counts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vsraq_modifier.cli.demo import DEFAULTS
from vsraq_modifier.config import VSRAQConfig

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _rows(path: Path) -> dict[str, list[str]]:
    """First cell of every markdown table row -> its other cells."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


@pytest.mark.parametrize(
    ("row", "keys"),
    [
        ("`--scheme`", ["scheme"]),
        ("`--iters`", ["iters"]),
        ("`--seed`", ["seed"]),
        ("`--nsamples`, `--seqlen`", ["nsamples", "seqlen"]),
        ("`--batch-size`", ["batch_size"]),
        ("`--eval-tokens`, `--eval-seq-len`", ["eval_tokens", "eval_seq_len"]),
        ("`--threads`", ["threads"]),
    ],
)
def test_demo_doc_defaults(row, keys):
    documented = _rows(DOCS / "demo.md")[row][0].strip("`")
    assert documented == ", ".join(str(DEFAULTS[k]) for k in keys)


def _doc_value(text: str) -> object:
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    return {"true": True, "false": False}.get(text, text)


@pytest.mark.parametrize(
    "name",
    [n for n in VSRAQConfig.model_fields if n != "temperature"],
)
def test_objective_doc_option_defaults(name):
    documented = _rows(DOCS / "objective.md")[f"`{name}`"][1]
    default = VSRAQConfig.model_fields[name].default
    expected = (
        float(default)
        if isinstance(default, (int, float)) and not isinstance(default, bool)
        else default
    )
    assert _doc_value(documented) == expected


@pytest.mark.parametrize("name", ["structure_weight", "value_weight", "value_target"])
def test_autoround_doc_option_defaults(name):
    rows = _rows(DOCS / "autoround.md")
    row = next(v for k, v in rows.items() if k.startswith(f"`--vsraq_{name}"))
    default = VSRAQConfig.model_fields[name].default
    assert _doc_value(row[1]) == (
        float(default) if isinstance(default, float) else default
    )
