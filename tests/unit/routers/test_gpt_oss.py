"""The gpt_oss adapter on its own (tests/helpers/routers.py::check_family_adapter;
all variants and dtypes: tests/unit/routers/test_adapters.py)."""

from __future__ import annotations

from tests.helpers.routers import check_family_adapter


def test_adapter_spec_and_decision() -> None:
    check_family_adapter("gpt_oss")
