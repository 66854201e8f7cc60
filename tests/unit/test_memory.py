"""The memory estimate on a real tiny model's routers, its log line, and the order
of the fixes the error suggests (the byte-exact and measured bounds:
tests/reliability/test_memory.py)."""

from __future__ import annotations

import pytest

from vsraq_modifier.memory import (
    ENV_LIMIT,
    MemoryLimitError,
    RoutingMemory,
    _gib,
    available_bytes,
    check_memory,
    guard_routing_memory,
)
from vsraq_modifier.routers import find_routers
from vsraq_modifier.testing import tiny_model


def _guard(limit: str, **kw) -> RoutingMemory:
    model = tiny_model("qwen2_moe")  # layers 0 and 2 route, layer 1 is dense
    args = {"tokens": 64, "batch_tokens": 16, "lookahead": True, **kw}
    return guard_routing_memory(
        find_routers(model),
        num_layers=3,
        config=model.config,
        environ={ENV_LIMIT: limit},
        **args,
    )


def test_estimate_of_a_real_model_follows_its_routers() -> None:
    est = _guard("off")
    assert (est.reference_layer, est.reference_routers) == (0, 2)
    assert est.reference_bytes == 64 * (8 + 8) * 2
    assert est.lookahead_layers == 2 and est.lookahead_bytes > 0
    assert est.total_bytes == est.reference_bytes + est.lookahead_bytes
    line = est.describe()
    assert (
        line.startswith("about ") and "64 tokens x 16 experts over 2 router(s)" in line
    )
    assert "16 tokens per step through 2 layer(s)" in line
    assert "no look-ahead activations" in _guard("off", routing_loss=False).describe()


def test_guard_raises_over_a_limit_from_the_environment() -> None:
    assert _guard("1").total_bytes < 2**30
    with pytest.raises(
        MemoryLimitError, match="logits 3.05 MB .* over the limit of 1.05 KB"
    ):
        _guard("0.000001", tokens=10**5)


def test_fixes_start_with_the_larger_part() -> None:
    def est(ref: int, ahead: int) -> RoutingMemory:
        return RoutingMemory(10, 2, ref, 0, 1, 8, ahead, 1)

    with pytest.raises(MemoryLimitError) as info:
        check_memory(est(100, 10), 50)
    msg = str(info.value)
    assert msg.index("nsamples") < msg.index("batch_size")
    with pytest.raises(MemoryLimitError) as info:
        check_memory(est(10, 100), 50)
    msg = str(info.value)
    assert msg.index("batch_size") < msg.index("nsamples")
    with pytest.raises(MemoryLimitError) as info:
        check_memory(est(100, 0), 50)
    assert "batch_size" not in str(info.value)


def test_units_and_devices() -> None:
    assert (_gib(3 * 2**30), _gib(5 * 2**20), _gib(2048)) == ("3 GB", "5 MB", "2 KB")
    assert _gib(200 * 2**20) == "0.195 GB"
    assert available_bytes("meta") is None
    cpu = available_bytes("cpu")
    assert cpu is None or cpu > 0
