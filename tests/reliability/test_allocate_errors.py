"""``vsraq allocate`` refuses bad input with one line and exit status 2, before
any measurement, and leaves no output directory behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.checkpoints import make_text, save_checkpoint
from vsraq_modifier.cli import main
from vsraq_modifier.testing import tiny_model


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory) -> Path:
    return save_checkpoint(
        tiny_model("qwen3_moe", num_hidden_layers=2),
        tmp_path_factory.mktemp("m") / "moe",
    )


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("d") / "prose.txt"
    f.write_text(make_text(64))
    return f


def _fails(capsys, argv: list[str], *words: str) -> str:
    out = Path(argv[argv.index("--out") + 1])
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and err[0].startswith("vsraq allocate: error: "), err
    for w in words:
        assert w in err[0]
    assert not out.exists()
    return err[0]


def _argv(model: Path, data: Path, tmp: Path, *extra: str) -> list[str]:
    args = {
        "--avg-bits": "3",
        "--schemes": "W2A16G32,W4A16@32",
        "--dataset": f"a={data}",
    }
    for k, v in zip(extra[::2], extra[1::2]):
        args[k] = v
    argv = [
        "allocate",
        "--model",
        str(model),
        "--out",
        str(tmp / "out"),
        "--no-progress",
    ]
    for k, v in args.items():
        argv += [k, v]
    return argv


def test_budget_out_of_range_names_both_bounds(capsys, moe_dir, text_file, tmp_path):
    for bits in ("1.5", "9"):
        _fails(
            capsys,
            _argv(moe_dir, text_file, tmp_path, "--avg-bits", bits),
            f"--avg-bits {bits}",
            "2.5625",
            "4.6250",
        )


def test_unknown_scheme(capsys, moe_dir, text_file, tmp_path):
    _fails(
        capsys,
        _argv(moe_dir, text_file, tmp_path, "--schemes", "W2A16G32,W9A16"),
        "W9A16",
        "unknown AutoRound preset",
    )


def test_dataset_name_given_twice(capsys, moe_dir, text_file, tmp_path):
    argv = _argv(moe_dir, text_file, tmp_path) + ["--dataset", f"a={text_file}"]
    _fails(capsys, argv, "'a' is given twice")


def test_missing_dataset_file(capsys, moe_dir, tmp_path):
    _fails(capsys, _argv(moe_dir, tmp_path / "nope.txt", tmp_path), "no such file")


def test_non_moe_model(capsys, text_file, tmp_path):
    from transformers import AutoModelForCausalLM, Qwen3Config

    cfg = Qwen3Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    )
    dense = save_checkpoint(AutoModelForCausalLM.from_config(cfg), tmp_path / "dense")
    _fails(
        capsys, _argv(dense, text_file, tmp_path), "Qwen3ForCausalLM", "Supported MoE"
    )


def test_scheme_groups_do_not_tile(capsys, moe_dir, text_file, tmp_path):
    _fails(
        capsys,
        _argv(moe_dir, text_file, tmp_path, "--schemes", "W2A16G32,W4A16"),
        "W4A16",
        "groups of 128",
        "W4A16@32",
    )


def test_bad_domain_weights(capsys, moe_dir, text_file, tmp_path):
    _fails(
        capsys,
        _argv(
            moe_dir, text_file, tmp_path, "--domain-weights", "b=1", "--seq-len", "16"
        ),
        "--domain-weights",
    )


def test_too_little_text_for_one_window(capsys, moe_dir, text_file, tmp_path):
    _fails(
        capsys,
        _argv(moe_dir, text_file, tmp_path, "--seq-len", "256"),
        "64 tokens",
        "--seq-len 256",
    )


def test_non_empty_output_directory(capsys, moe_dir, text_file, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(_argv(moe_dir, text_file, tmp_path)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "not empty" in err[0]
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
