"""AutoRound's own schemes and export formats with the VSRAQ loss: the checkpoint
has the layout of plain AutoRound's (mse) and reloads on a CPU.

Formats: ``auto_round`` (reloads in transformers through AutoRound's backend) and
``llm_compressor`` (compressed-tensors, what vLLM reads). transformers 5.17 alone
loads the latter's per-expert MoE weights as *missing* (it expects fused experts);
AutoRound's own loader patch for such checkpoints (``apply_model_monkey_patches``)
maps them, and compressed-tensors decompresses every weight on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.helpers.autoround import EXPORT_DIMS, calib_ids, small_moe, tiny_tokenizer

SCHEMES = {
    "W4A16_g128": dict(scheme="W4A16"),
    "W4A16_g32": dict(scheme="W4A16", group_size=32),
    "W3A16_g128": dict(scheme="W3A16"),
    "W2A16_g64": dict(scheme="W2A16G64"),
    "NVFP4": dict(scheme="NVFP4"),
    "MXFP4": dict(scheme="MXFP4"),
}
FORMATS = {"auto-round": "auto_round", "llm-compressor": "llm_compressor"}
WEIGHT_ONLY = {"W4A16_g128", "W4A16_g32", "W3A16_g128", "W2A16_g64"}
IDS = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(5))


def _quantize(loss: str | None, scheme: dict, out: Path) -> dict[str, Path]:
    """Checkpoint folders by format; ``loss=None`` is plain AutoRound (mse)."""
    from auto_round import AutoRound

    from vsraq_modifier.integrations.autoround import autoround

    model = small_moe(**EXPORT_DIMS)
    run = dict(
        iters=1,
        nsamples=2,
        seqlen=32,
        batch_size=2,
        device_map="cpu",
        dataset=calib_ids(2),
        **scheme,
    )
    if loss is None:
        ar = AutoRound(model, tiny_tokenizer(), enable_torch_compile=False, **run)
    else:
        ar = autoround(model, tiny_tokenizer(), loss=loss, **run)
    _, folders = ar.quantize_and_save(str(out), format=",".join(FORMATS.values()))
    by_format = {}
    for folder in map(Path, folders):
        (fmt,) = [f for f in FORMATS if folder.name.startswith(f)]
        by_format[fmt] = folder
    assert set(by_format) == set(FORMATS), folders
    return by_format


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def checkpoints(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(name)
    return name, {
        loss or "mse": _quantize(loss, SCHEMES[name], root / (loss or "mse"))
        for loss in (None, "vsraq")
    }


def _tensors(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                out[key] = (tuple(sl.get_shape()), sl.get_dtype())
    return out


@pytest.mark.slow
def test_same_layout_as_plain_autoround(checkpoints):
    _name, ckpt = checkpoints
    for fmt in FORMATS:
        mse, ours = ckpt["mse"][fmt], ckpt["vsraq"][fmt]
        files = sorted(p.name for p in mse.iterdir())
        assert files == sorted(p.name for p in ours.iterdir())
        for file in files:
            assert (mse / file).stat().st_size == (ours / file).stat().st_size, file
        tensors = _tensors(mse)
        assert tensors and _tensors(ours) == tensors
        if fmt == "llm-compressor":
            config = json.loads((ours / "config.json").read_text())
            assert config["quantization_config"]["quant_method"] == "compressed-tensors"


def _load(folder: Path, fmt: str, name: str):
    from transformers import AutoModelForCausalLM

    kwargs = {"device_map": "cpu"}
    if fmt == "llm-compressor":
        from auto_round.modeling.unfused_moe import apply_model_monkey_patches

        assert apply_model_monkey_patches(str(folder))
        # compressed-tensors decompresses the integer schemes' weights to the
        # float32 asked for here, the FP4 ones (MXFP4, NVFP4) to bfloat16 whatever
        # the config says; AutoRound writes a float32 config on a CPU without
        # bf16 support (no amp: AMD EPYC here), a bfloat16 one on a CPU with it
        kwargs["dtype"] = torch.float32 if name in WEIGHT_ONLY else torch.bfloat16
    model, info = AutoModelForCausalLM.from_pretrained(
        folder, output_loading_info=True, **kwargs
    )
    assert not any(info.values()), info  # no missing / unexpected / mismatched key
    with torch.no_grad():
        return model, model(IDS).logits.float()


@pytest.mark.slow
def test_reloads_on_cpu_with_finite_logits(checkpoints):
    name, ckpt = checkpoints
    for loss in ("mse", "vsraq"):
        logits = {}
        for fmt in FORMATS:
            model, logits[fmt] = _load(ckpt[loss][fmt], fmt, name)
            assert torch.isfinite(logits[fmt]).all()
            if fmt == "llm-compressor":  # every quantized linear was decompressed
                status = {
                    str(getattr(m, "quantization_status", None))
                    for n, m in model.named_modules()
                    if "experts." in n and n.endswith("_proj")
                }
                assert status == {"QuantizationStatus.DECOMPRESSED"}, status
        # both formats hold the same quantized weights (activation-quantized
        # schemes differ more: the two runtimes quantize activations differently)
        a, b = logits["auto-round"].flatten(), logits["llm-compressor"].flatten()
        corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
        assert corr > (0.999 if name in WEIGHT_ONLY else 0.95), (loss, corr)
