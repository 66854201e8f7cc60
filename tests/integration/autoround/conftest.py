"""Every AutoRound integration test runs under ``host_env`` (tests/helpers/fixtures.py:
transformers patches restored, cheap gc, a temporary working directory)."""

from __future__ import annotations

import pytest

from tests.helpers.fixtures import (  # noqa: F401  (fixtures used below)
    cheap_gc,
    host_env,
    in_tmp_dir,
    restore_transformers_patches,
)


@pytest.fixture(autouse=True)
def autoround_env(request: pytest.FixtureRequest) -> None:
    """Switch ``host_env`` on for every test here."""
    request.getfixturevalue("host_env")
