"""One llm-compressor import per test session (tests/helpers/fixtures.py), and the
session's directory of tiny checkpoints."""

from __future__ import annotations

import pytest

from tests.helpers.fixtures import (  # noqa: F401  (fixtures for the tests here)
    checkpoints,
    llmcompressor_imported,
)


@pytest.fixture(scope="session", autouse=True)
def llmcompressor_session(request: pytest.FixtureRequest) -> None:
    """Switch the one-time import on for every test here."""
    request.getfixturevalue("llmcompressor_imported")
