"""``vsraq refit``: every bad input ends with one ``vsraq refit: error:`` line,
exit status 2, and no output directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.checkpoints import drop_tensors
from tests.helpers.refit import make_text, tiny_checkpoint
from vsraq_modifier.cli import main


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ref") / "ref")


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "cal.txt"
    path.write_text(make_text(3000, seed=2))
    return path


def _refit(tmp_path, ref, quantized, dataset, *extra):
    out = tmp_path / "out"
    code = main(
        [
            "refit",
            "--reference",
            str(ref),
            "--quantized",
            str(quantized),
            "--dataset",
            str(dataset),
            "--nsamples",
            "8",
            "--seqlen",
            "32",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )
    return code, out


def _one_error_line(capsys, *words):
    err = [
        ln
        for ln in capsys.readouterr().err.splitlines()
        if ln.startswith("vsraq refit: error:")
    ]
    assert len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def test_refit_reference_of_another_model(tmp_path, ref, text, capsys):
    other = tiny_checkpoint(tmp_path / "other", num_experts=4)
    code, out = _refit(tmp_path, ref, other, text)
    assert code == 2 and not out.exists()
    _one_error_line(capsys, "not the same model", "experts 8 vs 4")


def test_refit_checkpoint_without_routers(tmp_path, ref, text, capsys):
    q = tiny_checkpoint(tmp_path / "q")
    assert drop_tensors(q, "mlp.gate.weight")
    code, out = _refit(tmp_path, ref, q, text)
    assert code == 2 and not out.exists()
    _one_error_line(capsys, "no router tensor model.layers.0.mlp.gate.weight")


def test_refit_dense_model_has_no_routers(tmp_path, text, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.helpers.checkpoints import save_checkpoint

    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=128,
    )
    dense = save_checkpoint(LlamaForCausalLM(config), tmp_path / "dense")
    code, out = _refit(tmp_path, dense, dense, text)
    assert code == 2 and not out.exists()
    _one_error_line(capsys, "--reference", "has no router adapter")


def _quantize_routers(checkpoint: Path) -> None:
    """Replace each router weight by the tensors compressed-tensors writes for a
    pack-quantized Linear (what a recipe without the router in its ignore list
    leaves where the router is an nn.Linear, as in AutoRound's rewritten blocks)."""
    import torch
    from safetensors.torch import load_file, save_file

    file = checkpoint / "model.safetensors"
    tensors = load_file(file)
    for name in [k for k in tensors if k.endswith("mlp.gate.weight")]:
        w = tensors.pop(name)
        base = name.removesuffix(".weight")
        tensors[f"{base}.weight_packed"] = torch.zeros(
            w.shape[0], w.shape[1] // 8, dtype=torch.int32
        )
        tensors[f"{base}.weight_scale"] = torch.ones(w.shape[0], w.shape[1] // 32)
        tensors[f"{base}.weight_shape"] = torch.tensor(list(w.shape))
    save_file(tensors, file, metadata={"format": "pt"})


def test_refit_quantized_router_names_the_ignore_pattern(tmp_path, ref, text, capsys):
    q = tiny_checkpoint(tmp_path / "q")
    _quantize_routers(q)
    code, out = _refit(tmp_path, ref, q, text)
    assert code == 2 and not out.exists()
    _one_error_line(capsys, "is quantized", "weight_packed", "re:.*mlp.gate$")


def test_refit_calibration_text_too_short(tmp_path, ref, text, capsys):
    code, out = _refit(tmp_path, ref, ref, text, "--nsamples", "1000")
    assert code == 2 and not out.exists()
    _one_error_line(capsys, "calibration text too short", "lower --nsamples")


def test_refit_output_exists(tmp_path, ref, text, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    code, _ = _refit(tmp_path, ref, ref, text)
    assert code == 2
    _one_error_line(capsys, "exists and is not empty")
    assert (tmp_path / "out" / "config.json").read_text() == "{}"


@pytest.mark.parametrize(
    "content, suffix, words",
    [
        ('{"text": "w1 w2"}\n{"txt": "w3"}\n', ".jsonl", ["record 1 has no 'text'"]),
        ('[{"text": "w1"', ".json", ["invalid JSON at line 1"]),
        (b"w1 \xff\xfe w2", ".txt", ["not UTF-8 text (byte 3)"]),
        ("   \n", ".txt", ["no text"]),
    ],
)
def test_refit_bad_dataset_file(tmp_path, ref, capsys, content, suffix, words):
    bad = tmp_path / f"data{suffix}"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out = _refit(tmp_path, ref, ref, bad)
    assert code == 2 and not out.exists()
    _one_error_line(capsys, "--dataset", *words)


def test_refit_missing_dataset_file(tmp_path, ref, capsys):
    code, out = _refit(tmp_path, ref, ref, tmp_path / "nope.txt")
    assert code == 2 and not out.exists()
    _one_error_line(capsys, "nope.txt: not a file")


def test_refit_bad_options(tmp_path, ref, text, capsys):
    code, _ = _refit(tmp_path, ref, ref, text, "--ridge", "0")
    assert code == 2
    _one_error_line(capsys, "ridge=0.0: must be a finite number > 0")
    code, _ = _refit(tmp_path, ref, ref, text, "--accept-se", "-1")
    assert code == 2
    _one_error_line(capsys, "accept_se=-1.0: must be a number >= 0")
    code, _ = _refit(tmp_path, ref, ref, text, "--seqlen", "100000")
    assert code == 2
    _one_error_line(capsys, "exceeds the model's max_position_embeddings")


def test_refit_jsonl_dataset_is_read(tmp_path, ref, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "\n".join(f'{{"text": "{make_text(200, seed=i)}"}}' for i in range(10))
    )
    code, out = _refit(tmp_path, ref, ref, data)
    assert code == 0 and (out / "config.json").is_file()
