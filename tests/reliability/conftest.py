"""Fixtures of the reliability tests: the host tests' fixtures from
tests/helpers/fixtures.py. Nothing here is autouse: the pure tests stay host-free;
a host test module opts in with ``pytestmark = pytest.mark.usefixtures("host_env")``
(AutoRound) or ``usefixtures("llmc_env")`` (llm-compressor)."""

from tests.helpers.fixtures import (  # noqa: F401  (fixtures for the tests here)
    cheap_gc,
    checkpoints,
    host_env,
    in_tmp_dir,
    llmc_env,
    llmcompressor_imported,
    restore_transformers_patches,
)
