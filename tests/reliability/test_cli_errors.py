"""``vsraq report`` and ``vsraq demo``: input errors not covered by their own tests
(tests/integration/test_report.py, tests/integration/test_demo.py) end with one
``error:`` line and a non-zero exit status, before any model runs."""

from __future__ import annotations

import pytest

from tests.helpers.checkpoints import make_text, save_checkpoint, tiny_checkpoint
from vsraq_modifier.cli import main
from vsraq_modifier.testing import tiny_model


@pytest.fixture
def inputs(tmp_path):
    ref = tiny_checkpoint(tmp_path / "ref")
    text = tmp_path / "text.txt"
    text.write_text(make_text(300, seed=1))
    return ref, text


def _report(tmp_path, ref, text, *extra):
    return main(
        ["report", "--reference", str(ref), "--text", str(text), "--no-progress"]
        + ["--out", str(tmp_path / "out"), "--quantized", f"q={ref}", *extra]
    )


def test_report_seq_len_below_2_is_a_usage_error(tmp_path, inputs, capsys):
    with pytest.raises(SystemExit) as e:
        _report(tmp_path, *inputs, "--seq-len", "1")
    assert e.value.code == 2 and "1: must be >= 2" in capsys.readouterr().err


def test_report_missing_text(tmp_path, inputs, capsys):
    ref, _ = inputs
    assert _report(tmp_path, ref, tmp_path / "nowhere.txt") == 1
    assert "error: --text" in capsys.readouterr().err


def test_report_text_too_short(tmp_path, inputs, capsys):
    ref, _ = inputs
    (tmp_path / "one.txt").write_text("w1")
    assert _report(tmp_path, ref, tmp_path / "one.txt") == 1
    assert "1 token ids: need at least 2 to evaluate" in capsys.readouterr().err


def test_report_reference_without_tokenizer(tmp_path, inputs, capsys):
    _, text = inputs
    bare = tmp_path / "bare"
    tiny_model("qwen3_moe").save_pretrained(bare)  # weights, no tokenizer
    assert _report(tmp_path, bare, text) == 1
    assert "no tokenizer in" in capsys.readouterr().err


def test_report_checkpoint_of_another_model(tmp_path, inputs, capsys):
    ref, text = inputs
    other = save_checkpoint(tiny_model("qwen3_moe", num_experts=4), tmp_path / "o")
    assert _report(tmp_path, ref, text, "--quantized", f"other={other}") == 1
    assert "differ from the reference's" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model", "{tmp}/nowhere"], "is not a directory"),
        (["--model", "{ref}", "--text", "{tmp}/nowhere.txt"], "is not a file"),
        (["--model", "{ref}", "--out", "{text}"], "is a file"),
    ],
    ids=["model", "text", "out-is-a-file"],
)
def test_demo_input_errors(tmp_path, inputs, capsys, args, match):
    ref, text = inputs
    args = [a.format(tmp=tmp_path, ref=ref, text=text) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "demo")]
    assert main(["demo", *args]) == 1
    err = capsys.readouterr().err
    assert "vsraq demo: error:" in err and match in err


def test_demo_iters_0_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "d"), "--iters", "0"])
    assert e.value.code == 2 and "0: must be >= 1" in capsys.readouterr().err
