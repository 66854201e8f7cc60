"""The objective's tests use tiny tensors: one thread avoids thread-pool overhead
(tens of ms per op on a loaded 2-core machine)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
