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
