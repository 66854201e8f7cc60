"""The methods and schemes ``vsraq demo`` and the benchmark compare, the export
format chosen per model, and what ``quantize_checkpoint`` refuses before a run
(the runs themselves: tests/integration/test_demo.py)."""

from __future__ import annotations

import pytest

from vsraq_modifier.runs import (
    FALLBACK_EXPORT,
    METHODS,
    SCHEMES,
    _checkpoint_dir,
    export_format,
    quantize_checkpoint,
)
from vsraq_modifier.testing import tiny_model


def test_export_format_falls_back_when_groups_do_not_tile() -> None:
    narrow = tiny_model("qwen3_moe")  # experts 32 wide: group 128 does not divide
    fmt, why = export_format(narrow, SCHEMES["W4A16"])
    assert fmt == FALLBACK_EXPORT and "down_proj" in why
    wide = tiny_model(
        "qwen3_moe", hidden_size=128, head_dim=32, moe_intermediate_size=128
    )
    assert export_format(wide, SCHEMES["W4A16"]) == ("llm_compressor", None)
    assert export_format(narrow, SCHEMES["NVFP4"]) == ("auto_round", None)


def test_methods_are_the_issue_matrix() -> None:
    assert list(METHODS) == [
        "rtn",
        "mse",
        "topk_mse",
        "router_kl",
        "vsraq",
        "vsraq_unguarded",
        "vsraq_value",
        "vsraq_structure",
        "vsraq_nolookahead",
        "mse_refit",
        "router_kl_refit",
        "vsraq_refit",
        "vsraq_default",
    ]
    assert METHODS["vsraq_value"].options["structure_weight"] == 0.0
    # the safeguards are the default; vsraq_unguarded is the method before them
    assert "best_iteration" not in METHODS["vsraq"].options
    assert METHODS["vsraq_unguarded"].options["best_iteration"] == "total"
    assert METHODS["vsraq_unguarded"].options["max_flip_share"] == 1.0
    assert METHODS["mse"].options is None  # plain AutoRound, no plugin code


def test_every_routing_method_names_a_loss() -> None:
    for name, method in METHODS.items():
        if method.options is None:
            assert name in ("rtn", "mse") and method.rtn == (name == "rtn")
        else:
            base = name.removesuffix("_refit")
            assert method.options.get("loss", "vsraq") in ("vsraq", base)
            refit = method.options.get("router_refit", "none")
            assert refit == ("ridge" if name.endswith("_refit") else "none")


def test_an_existing_output_is_refused_before_loading(tmp_path) -> None:
    out = tmp_path / "done"
    out.mkdir()
    with pytest.raises(FileExistsError, match="done exists"):
        quantize_checkpoint(
            tmp_path / "no-model",
            out,
            method="mse",
            scheme="W4A16",
            dataset=[],
            seed=0,
            iters=0,
        )


def test_the_written_checkpoint_is_found_once(tmp_path) -> None:
    (tmp_path / "sub" / "model").mkdir(parents=True)
    (tmp_path / "sub" / "model" / "config.json").write_text("{}")
    assert _checkpoint_dir(tmp_path) == tmp_path / "sub" / "model"
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="expected one checkpoint"):
        _checkpoint_dir(tmp_path)


def test_matrix_methods_keep_the_look_ahead_they_ran_with() -> None:
    """The matrix's routing cells ran with the look-ahead on every step; the
    default became every 2nd step, and only vsraq_default follows it."""
    from vsraq_modifier.config import VSRAQConfig

    assert VSRAQConfig().lookahead_every == 2
    assert METHODS["vsraq_default"].options == {"loss": "vsraq"}
    for name, m in METHODS.items():
        if m.options is None or name == "vsraq_default":
            continue
        if m.options.get("loss", "mse") != "mse" and m.options.get("lookahead", True):
            assert m.options["lookahead_every"] == 1, name
