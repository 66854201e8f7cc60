"""Chunks per domain, and the checks that come before the measurement."""

from __future__ import annotations

import pytest

from vsraq_modifier.allocate.domains import Domain, DomainError
from vsraq_modifier.allocate.pipeline import domain_chunks, plan
from vsraq_modifier.allocate.schemes import SchemeError, parse_schemes
from vsraq_modifier.allocate.solve import BudgetError
from vsraq_modifier.testing import tiny_model


class _Tok:
    def __call__(self, text, **kw):
        return {"input_ids": [int(w) for w in text.split()]}


def test_chunks_spread_over_each_text():
    text = " ".join(str(i) for i in range(100))
    chunks, available = domain_chunks([Domain("a", text, "x")], _Tok(), 10, 30)
    assert available == {"a": 100}
    starts = [int(c[0]) for c in chunks["a"]]
    assert starts == [
        0,
        40,
        90,
    ]  # windows 0, round(4.5), 9 and all(c.numel() == 10 for c in chunks["a"])
    with pytest.raises(DomainError, match="fewer than one window"):
        domain_chunks([Domain("b", "1 2 3", "x")], _Tok(), 10, 30)


def test_plan_refuses_before_measuring():
    model = tiny_model("qwen3_moe")
    units, costs = plan(model, parse_schemes("W2A16G32,W4A16@32"), "layer", 3.0)
    assert costs.shape == (len(units), 2) and (costs[:, 0] < costs[:, 1]).all()
    with pytest.raises(BudgetError, match="between"):
        plan(model, parse_schemes("W2A16G32,W4A16@32"), "layer", 5.0)
    with pytest.raises(SchemeError, match="groups of 128"):
        plan(model, parse_schemes("W2A16G32,W4A16"), "layer", 3.0)
