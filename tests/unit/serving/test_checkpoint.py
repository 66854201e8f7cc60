"""Reading a compressed-tensors config group as a scheme (the checkpoint side of
``vsraq check-serving``)."""

from __future__ import annotations

from vsraq_modifier.serving import UNQUANTIZED
from vsraq_modifier.serving.checkpoint import scheme_from_config_group


def test_config_groups_become_schemes() -> None:
    w4 = {
        "targets": ["Linear"],
        "weights": {
            "num_bits": 4,
            "type": "int",
            "strategy": "group",
            "group_size": 64,
        },
    }
    scheme = scheme_from_config_group(w4, "pack-quantized")
    assert (scheme.bits, scheme.group_size, scheme.format) == (4, 64, "pack-quantized")
    channel = {"weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}
    assert scheme_from_config_group(channel, "pack-quantized").group_size == -1
    assert scheme_from_config_group({"targets": ["Linear"]}, None) is UNQUANTIZED
