"""Shared test setup: deterministic, one torch thread, no hub access.

One intra-op thread for the whole suite: every test model is tiny, and on 2 cores
shared with other processes a second OpenMP thread makes each small op wait for a
busy core (torch.round on 128 x 128: 2 us with 1 thread, 12 ms with 2 under load; a
tiny AutoRound run drops from ~25 s to ~2 s).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def keep_transformers_conversion_table():
    """AutoRound's checkpoint loader edits transformers' process-wide checkpoint
    conversion table (it drops the MoE expert-merge step of a model type); later
    loads in the same process then miss expert weights. Restore it after each test,
    as the report's loader does after each load."""
    from vsraq_modifier.transformers_seams import conversion_mapping_restored

    with conversion_mapping_restored():
        yield
