"""``vsraq report`` and ``vsraq demo`` with bad inputs: one ``vsraq <cmd>: error:``
line on stderr naming the input, exit status 1 (docs/errors.md), and no --out
directory left behind (inputs are checked before it is created)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers.checkpoints import make_text, tiny_checkpoint
from vsraq_modifier.cli import main


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ref") / "ref")


@pytest.fixture
def text(tmp_path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(make_text(300, seed=1))
    return path


def _copy(src: Path, to: Path) -> Path:
    to.mkdir()
    for f in src.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


def _fails(capsys, out: Path, argv: list[str]) -> str:
    """Run ``vsraq ARGV``; assert exit 1, one error line, no --out; return it."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]  # not bars
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith(f"vsraq {argv[0]}: error: "), err
    assert not Path(out).exists() or str(out) == "", "a failed run left its --out"
    return lines[0]


def _report(
    capsys, tmp_path, ref, text, *extra: str, out: Path | str | None = None
) -> str:
    out = tmp_path / "rep" if out is None else out
    argv = ["report", "--reference", str(ref), "--text", str(text), "--no-progress"]
    return _fails(capsys, out, [*argv, "--out", str(out), *extra])


def _unwritable(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores modes:
    then sysfs, where nobody can)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):
        return ro
    return Path("/sys")


# --- vsraq report ------------------------------------------------------------------
def test_report_checkpoint_of_another_vocabulary(tmp_path, capsys, ref, text):
    other = tiny_checkpoint(tmp_path / "v256", vocab_size=256)
    line = _report(capsys, tmp_path, ref, text, "--quantized", f"q={other}")
    assert "q: vocabulary of 256 tokens differs from the reference's (128" in line


def test_report_tokenizer_beyond_the_vocabulary(tmp_path, capsys, ref, text):
    """A tokenizer of a larger vocabulary than the model: an IndexError inside the
    embedding before; now the id and the vocabulary are named."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i + 100 for i in range(126)}  # ids 100..225 > 127
    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, **vocab}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(
        tmp_path / "tok"
    )
    line = _report(
        capsys, tmp_path, ref, text, "--quantized", f"q={ref}",
        "--tokenizer", str(tmp_path / "tok"),
    )  # fmt: skip
    assert "gives token id 225, beyond the reference's vocabulary of 128" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("w1 w2 caf\u00e9".encode("latin-1"), "not UTF-8 (byte 9: b'\\xe9')"),
        (b"w1 \x00 w2", "binary content (a NUL byte at byte 3)"),
        (b"\n \n", "is empty"),
    ],
    ids=["latin1", "binary", "empty"],
)
def test_report_undecodable_text_names_the_file(
    tmp_path, capsys, ref, content, expected
):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    line = _report(capsys, tmp_path, ref, bad, "--quantized", f"q={ref}")
    assert f"--text {bad}" in line and expected in line, line


@pytest.mark.parametrize("case", ["truncated", "weightless", "config-only-json"])
def test_report_damaged_checkpoint(tmp_path, capsys, ref, text, case):
    q = _copy(ref, tmp_path / "q")
    weights = q / "model.safetensors"
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
        expected = "model.safetensors is not a readable safetensors file (incomplete"
    elif case == "weightless":
        weights.unlink()
        expected = "config.json but no weights"
    else:
        (q / "config.json").write_text("{")
        expected = "config.json: invalid JSON at line 1 column 2"
    line = _report(capsys, tmp_path, ref, text, "--quantized", f"q={q}")
    assert f"--quantized q={q}" in line and expected in line, line


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "tpu9", "gpu"])
def test_report_unknown_or_absent_device(tmp_path, capsys, ref, text, device):
    index = int(device.partition(":")[2] or 0)
    if device.startswith("cuda") and torch.cuda.device_count() > index:
        pytest.skip("this machine has the device")
    line = _report(capsys, tmp_path, ref, text, "--quantized", f"q={ref}",
                   "--device", device)  # fmt: skip
    assert f"--device {device}" in line or f"--device {device!r}" in line, line


def test_report_out_is_a_file_or_unwritable(tmp_path, capsys, ref, text):
    file = tmp_path / "f"
    file.write_text("x")
    line = _fails(
        capsys,
        tmp_path / "never",
        ["report", "--reference", str(ref), "--text", str(text), "--quantized",
         f"q={ref}", "--out", str(file)],
    )  # fmt: skip
    assert f"--out {file} is a file" in line
    ro = _unwritable(tmp_path)
    try:
        line = _report(capsys, tmp_path, ref, text, "--quantized", f"q={ref}",
                       out=ro / "rep")  # fmt: skip
        assert "is not writable" in line
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_report_empty_paths(tmp_path, capsys, ref, text, monkeypatch):
    """``--out "$OUT"`` with OUT unset: routing.json landed in the working
    directory before."""
    monkeypatch.chdir(tmp_path)
    line = _report(capsys, tmp_path, ref, text, "--quantized", f"q={ref}", out="")
    assert line == "vsraq report: error: --out is an empty path; pass the path itself"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.txt"]
    line = _report(capsys, tmp_path, "", text, "--quantized", f"q={ref}")
    assert "--reference is an empty path" in line  # not the shipped model
    line = _demo(capsys, tmp_path, "--model", str(ref), "--text", "")
    assert "--text is an empty path" in line  # not the shipped held-out text


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_report_disk_full_while_writing(tmp_path, capsys, ref, text):
    """routing.png goes to /dev/full (every write: ENOSPC, a full disk): one line,
    and the routing.json this run wrote is removed (no partial report)."""
    out = tmp_path / "rep"
    out.mkdir()
    (out / "routing.png").symlink_to("/dev/full")
    argv = ["report", "--reference", str(ref), "--text", str(text), "--no-progress"]
    code = main([*argv, "--quantized", f"q={ref}", "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln.lower()]
    assert code == 1 and err == [
        f"vsraq report: error: --out {out}: writing the report failed "
        "(No space left on device)"
    ], err
    assert sorted(p.name for p in out.iterdir()) == ["routing.png"]


@pytest.fixture(scope="module")
def auto_round_ragged(tmp_path_factory, ref) -> Path:
    """An auto_round export of the tiny model (width 64 < group 128): auto-round
    has no CPU kernel for it."""
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("ar")
    model = AutoModelForCausalLM.from_pretrained(str(ref), dtype=torch.float32)
    ar = AutoRound(
        model, AutoTokenizer.from_pretrained(str(ref)), scheme="W4A16", iters=0,
        disable_opt_rtn=True, dataset=[torch.randint(2, 128, (1, 16))] * 2,
        nsamples=2, seqlen=16, device_map="cpu", enable_torch_compile=False,
    )  # fmt: skip
    ar.quantize_and_save(str(out / "q"), format="auto_round")
    return next((out / "q").rglob("config.json")).parent


@pytest.mark.slow
def test_report_auto_round_checkpoint_without_a_cpu_kernel(
    tmp_path, capsys, ref, text, auto_round_ragged, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    line = _report(capsys, tmp_path, ref, text, "--quantized",
                   f"ar={auto_round_ragged}")  # fmt: skip
    assert "auto-round has no kernel on this device for layer model.layers." in line
    assert "(bits 4, group_size 128); export it with --format llm_compressor" in line


# --- vsraq demo --------------------------------------------------------------------
def _demo(capsys, tmp_path, *args: str) -> str:
    out = tmp_path / "demo"
    return _fails(capsys, out, ["demo", "--out", str(out), "--no-progress", *args])


def test_demo_more_windows_than_the_calibration_text(tmp_path, capsys, ref, text):
    line = _demo(capsys, tmp_path, "--model", str(ref), "--calibration-text",
                 str(text), "--nsamples", "100", "--seqlen", "32")  # fmt: skip
    assert f"--calibration-text {text} (its calibration part): " in line
    assert "100 windows of 32 tokens requested, the text has 7" in line


@pytest.mark.parametrize(
    ("flag", "content", "expected"),
    [
        ("--calibration-text", b"", "is empty"),
        ("--calibration-text", b"\xff\xfe w1", "not UTF-8 (byte 0"),
        ("--text", b"w1\x00", "binary content"),
    ],
)
def test_demo_unusable_texts(tmp_path, capsys, ref, text, flag, content, expected):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    files = {"--calibration-text": text, "--text": text, flag: bad}
    args = [x for k, v in files.items() for x in (k, str(v))]
    line = _demo(capsys, tmp_path, "--model", str(ref), *args)
    assert f"{flag} {bad}" in line and expected in line, line


@pytest.mark.parametrize("case", ["truncated", "no-tokenizer", "file"])
def test_demo_bad_model(tmp_path, capsys, ref, text, case):
    model = tmp_path / "m"
    if case == "file":
        model.write_text("x")
        expected = "is a file, not a checkpoint directory"
    else:
        _copy(ref, model)
        if case == "truncated":
            w = model / "model.safetensors"
            w.write_bytes(w.read_bytes()[:1000])
            expected = "not a readable safetensors file"
        else:
            (model / "tokenizer.json").unlink()
            (model / "tokenizer_config.json").unlink()
            expected = "no tokenizer files"
    line = _demo(capsys, tmp_path, "--model", str(model), "--text", str(text))
    assert f"--model {model}" in line and expected in line, line


def test_demo_unwritable_out(tmp_path, capsys, ref):
    ro = _unwritable(tmp_path)
    try:
        line = _fails(capsys, ro / "demo", ["demo", "--out", str(ro / "demo"),
                                            "--model", str(ref)])  # fmt: skip
        assert f"--out {ro / 'demo'}: {ro} is not writable" in line
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_model_type_transformers_does_not_know(tmp_path, capsys, ref, text):
    """A config whose model_type transformers does not know: a transformers
    ValueError traceback at the first quantization before."""
    model = _copy(ref, tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "model_type": "nonsense"}))
    line = _demo(capsys, tmp_path, "--model", str(model), "--text", str(text))
    assert "config.json has model_type 'nonsense', not one that transformers" in line
    line = _report(capsys, tmp_path, ref, text, "--quantized", f"q={model}")
    assert "model_type 'nonsense'" in line


def test_demo_refusals_found_by_trying(tmp_path, capsys, ref, text):
    """Each used to fail only after both quantizations (or to tune on the text
    that is measured): refused before any tuning now."""
    line = _demo(capsys, tmp_path, "--model", str(ref), "--text", str(text),
                 "--calibration-text", str(text))  # fmt: skip
    assert "--calibration-text and --text are the same file" in line
    calib = tmp_path / "calib.txt"
    calib.write_text(make_text(400, seed=2))
    base = ["--model", str(ref), "--calibration-text", str(calib)]
    line = _demo(capsys, tmp_path, *base, "--text", str(text), "--eval-seq-len", "4096")
    assert "--eval-seq-len 4096 exceeds the model's max_position_embeddings" in line
    one = tmp_path / "one.txt"
    one.write_text("w1")
    line = _demo(capsys, tmp_path, *base, "--text", str(one), "--seqlen", "32",
                 "--nsamples", "2")  # fmt: skip
    assert f"--text {one} has 1 token(s); the report needs at least 2" in line
    quantized = _copy(ref, tmp_path / "q")
    cfg = json.loads((quantized / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "compressed-tensors"}
    (quantized / "config.json").write_text(json.dumps(cfg))
    line = _demo(capsys, tmp_path, "--model", str(quantized), "--text", str(text))
    assert "is already quantized (compressed-tensors)" in line


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--eval-seq-len", "1", "1: must be >= 2"),
        ("--seqlen", "1", "1: must be >= 2"),
        ("--seed", "-1", "-1: must be >= 0"),
        ("--seed", str(2**32), f"{2**32}: must be <= {2**32 - 1}"),
    ],
)
def test_demo_usage_errors(tmp_path, capsys, flag, value, expected):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "d"), flag, value])
    assert e.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
