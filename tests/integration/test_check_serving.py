"""``vsraq check-serving`` on real checkpoints written by both hosts from a tiny
Qwen3-MoE (hidden 128, experts 64 wide), and its bad-input errors.

- llm-compressor ``oneshot`` (QuantizationModifier, W4A16 groups of 64,
  save_compressed): servable through Marlin; the same with experts 0-3 at 4 bits
  and 4-7 at 8 bits: refused, two schemes in one layer.
- AutoRound's llm_compressor export: W4A16 groups of 64 servable; W3A16 refused
  (int3 MoE); W2A16 groups of 64 only through an optional kernel (exit 1); its
  auto_round format: bad input naming the export to use.
- groups of 128 on 64-wide experts: no host writes that checkpoint (AutoRound's
  llm_compressor packing fails on it), so the llm-compressor W4A16 checkpoint's
  config.json is edited to claim groups of 128: refused, the group does not divide
  the intermediate width.
"""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import pytest
import torch

from vsraq_modifier.cli import main
from vsraq_modifier.testing import tiny_model

DIMS = dict(
    hidden_size=128,
    head_dim=32,
    intermediate_size=128,
    moe_intermediate_size=64,
    num_hidden_layers=2,
)
IGNORE = ["lm_head", "re:.*mlp.gate$"]
VOCAB = 128


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="t0", pad_token="t0", eos_token="t1"
    )


def ids(n: int = 2, seq: int = 32) -> torch.Tensor:
    return torch.randint(2, VOCAB, (n, seq), generator=torch.Generator().manual_seed(0))


def weights(bits: int, group: int = 64) -> dict:
    return dict(
        num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group
    )


def oneshot_checkpoint(out: Path, config_groups: dict) -> Path:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    base = out.parent / "base"
    if not (base / "config.json").exists():
        tiny_model("qwen3_moe", **DIMS).save_pretrained(base)
        tokenizer().save_pretrained(base)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    x = ids()
    data = Dataset.from_dict(
        {"input_ids": x.tolist(), "attention_mask": torch.ones_like(x).tolist()}
    )
    recipe = QuantizationModifier(config_groups=config_groups, ignore=IGNORE)
    oneshot(
        model=model,
        processor=tokenizer(),
        dataset=data,
        recipe=recipe,
        num_calibration_samples=2,
        max_seq_length=32,
    )
    model.save_pretrained(out, save_compressed=True)
    return out


def autoround_checkpoint(out: Path, fmt: str = "llm_compressor", **scheme) -> Path:
    from auto_round import AutoRound

    ar = AutoRound(
        tiny_model("qwen3_moe", **DIMS),
        tokenizer(),
        iters=1,
        nsamples=2,
        seqlen=32,
        batch_size=2,
        device_map="cpu",
        dataset=[x[None] for x in ids()],
        enable_torch_compile=False,
        **scheme,
    )
    ar.quantize_and_save(str(out), format=fmt)
    (config,) = out.rglob("config.json")  # AutoRound adds a sub-folder
    return config.parent


@pytest.fixture(scope="module", autouse=True)
def cheap_gc():
    """AutoRound calls gc.collect() after every block; freezing the objects the
    imports made keeps those calls cheap (as in tests/integration/autoround)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            path = root / name
            made[name] = {
                "llmc-w4g64": lambda: oneshot_checkpoint(
                    path, {"g": {"targets": ["Linear"], "weights": weights(4)}}
                ),
                "llmc-two-schemes": lambda: oneshot_checkpoint(
                    path,
                    {
                        "low": {
                            "targets": [r"re:.*experts\.[0-3]\..*"],
                            "weights": weights(4),
                        },
                        "high": {
                            "targets": [r"re:.*experts\.[4-7]\..*"],
                            "weights": weights(8),
                        },
                    },
                ),
                "ar-w4g64": lambda: autoround_checkpoint(
                    path, scheme="W4A16", group_size=64
                ),
                "ar-w2g64": lambda: autoround_checkpoint(path, scheme="W2A16G64"),
                "ar-w3g64": lambda: autoround_checkpoint(
                    path, scheme="W3A16", group_size=64
                ),
                "ar-native": lambda: autoround_checkpoint(
                    path, "auto_round", scheme="W4A16", group_size=64
                ),
            }[name]()
        return made[name]

    return get


def check(capsys, path: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["check-serving", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


#: check-serving's verdict when every MoE layer of the tiny model is refused
ALL_REFUSED = "verdict: NOT servable by vLLM (2 of 2 MoE layers refused)"


def refused(capsys, path: Path, *lines: str) -> None:
    """check-serving exits 1 on ``path`` and its text has each of ``lines``."""
    code, out, _ = check(capsys, path)
    assert code == 1
    for line in lines:
        assert line in out


@pytest.mark.parametrize("name", ["llmc-w4g64", "ar-w4g64"])
def test_w4a16_group_64_from_both_hosts_is_servable(ckpts, capsys, name):
    code, out, err = check(capsys, ckpts(name))
    assert code == 0, out + err
    assert out.count("Marlin WNA16 MoE (int4)") == 2  # one row per MoE layer
    assert "verdict: servable by vLLM" in out
    code, out, _ = check(capsys, ckpts(name), "--json")
    report = json.loads(out)
    assert code == 0 and report["servable"] and len(report["layers"]) == 2
    for layer in report["layers"]:
        assert layer["router"] == "unquantized"
        assert (layer["hidden"], layer["intermediate"]) == (128, 64)
        assert layer["experts"] == {"W4A16 g64 pack-quantized": 24}


def test_w3a16_moe_is_refused_with_the_reason(ckpts, capsys):
    refused(
        capsys,
        ckpts("ar-w3g64"),
        "layer 0: int3 MoE is not served by released vLLM",
        ALL_REFUSED,
    )


def test_w2a16_moe_needs_the_optional_kernel(ckpts, capsys):
    refused(
        capsys,
        ckpts("ar-w2g64"),
        "int2 MoE runs only through the optional Humming kernel",
        "verdict: NOT servable by default: needs an optional kernel",
    )


def test_group_128_on_64_wide_experts_is_refused(ckpts, capsys, tmp_path):
    path = tmp_path / "g128"
    shutil.copytree(ckpts("llmc-w4g64"), path)
    config = json.loads((path / "config.json").read_text())
    (group,) = config["quantization_config"]["config_groups"].values()
    group["weights"]["group_size"] = 128
    (path / "config.json").write_text(json.dumps(config))
    refused(
        capsys, path, "layer 0: group 128 does not divide intermediate 64", ALL_REFUSED
    )


def test_two_expert_schemes_in_one_layer_are_refused(ckpts, capsys):
    refused(
        capsys,
        ckpts("llmc-two-schemes"),
        "experts of layer 0 have two schemes",
        "experts of layer 1 have two schemes",
    )


def test_bad_input_exits_2_with_one_line(ckpts, capsys, tmp_path):
    """Each bad input: exit status 2, one stderr line naming what was wrong."""
    good = ckpts("llmc-w4g64")
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    no_tensors = tmp_path / "no-tensors"
    no_tensors.mkdir()
    (no_tensors / "config.json").write_text((good / "config.json").read_text())
    dense = tmp_path / "dense"
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    ).save_pretrained(dense)
    cases = {
        tmp_path / "nowhere": "is not a directory",
        good / "config.json": "is not a directory",
        no_config: "no config.json",
        bad_json: "unreadable config",
        no_tensors: "no *.safetensors files",
        dense: "no MoE experts in its tensors ('llama' looks dense)",
        ckpts("ar-native"): "export with format='llm_compressor'",
    }
    capsys.readouterr()  # what building the inputs printed
    for path, message in cases.items():
        code, out, err = check(capsys, path)
        assert code == 2, path
        assert out == "" and err.count("\n") == 1, err
        assert err.startswith("vsraq check-serving: error: ") and message in err, err
    with pytest.raises(SystemExit) as exit_:
        main(["check-serving", str(good), "--tensor-parallel-size", "0"])
    assert exit_.value.code == 2
    assert "argument --tensor-parallel-size: 0: must be >= 1" in capsys.readouterr().err
