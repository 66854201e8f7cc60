"""Which config group a checkpoint's expert tensor belongs to (the NVFP4 reload
fix decompresses each expert with its own group's scheme)."""

from __future__ import annotations

from types import SimpleNamespace

from vsraq_modifier.integrations.llmcompressor.reload import _scheme_for


def test_scheme_for_matches_regex_and_linear_targets() -> None:
    experts = SimpleNamespace(targets=[r"re:.*mlp\.experts\..*"])
    rest = SimpleNamespace(targets=["Linear"])
    only = SimpleNamespace(config_groups={"g0": experts})
    both = SimpleNamespace(config_groups={"g0": experts, "g1": rest})
    name = "model.layers.0.mlp.experts.3.down_proj"
    assert _scheme_for(name, only) is experts
    assert _scheme_for("model.layers.0.self_attn.q_proj", only) is None
    assert _scheme_for("model.layers.0.self_attn.q_proj", both) is rest
