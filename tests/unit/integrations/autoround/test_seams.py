"""One test per AutoRound seam (integrations/autoround/seams.py): each checks, by
signature, attribute or a tiny run, that auto-round still offers what the seam
uses. An AutoRound upgrade that moves one of them fails the test of that seam."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch import nn

from vsraq_modifier.integrations.autoround import seams
from vsraq_modifier.testing import tiny_model


def _params(fn: Any) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{chr(65 + i): i + 3 for i in range(26)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


@pytest.fixture(scope="module")
def tuned() -> dict[str, Any]:
    """One tiny VSRAQ run through the real AutoRound; records what the seams
    returned while a block was being tuned."""
    from vsraq_modifier.integrations.autoround import VSRAQQuantizer, autoround

    seen: dict[str, Any] = {}
    real = VSRAQQuantizer.vsraq_step_loss

    def spy(self, host, indices, masks):
        seen.setdefault("sample_masks", seams.sample_valid_masks(self))
        seen.setdefault("step_masks", masks)

        return real(self, host, indices, masks)

    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 29, (1, 16), generator=g) for _ in range(4)]
    model = tiny_model("qwen3_moe", num_hidden_layers=2, vocab_size=29)
    VSRAQQuantizer.vsraq_step_loss = spy
    try:
        ar = autoround(
            model,
            _tokenizer(),
            dataset=ids,
            nsamples=4,
            seqlen=16,
            batch_size=2,
            iters=2,
            scheme="W4A16",
            device_map="cpu",
        )
        ar.quantize()
    finally:
        VSRAQQuantizer.vsraq_step_loss = real
    seen["ar"] = ar
    return seen


def test_autoround_keywords() -> None:
    tuning, entry = seams.autoround_keywords()
    assert {"iters", "lr", "bits", "group_size"} <= tuning
    assert {"model", "tokenizer", "scheme", "dataset", "nsamples"} <= entry


def test_loss_seam_matches_signround_get_loss() -> None:
    from auto_round.algorithms.quantization.sign_round.quantizer import (
        SignRoundQuantizer,
    )

    host = _params(SignRoundQuantizer._get_loss)
    assert host == _params(seams.LossSeam._get_loss)
    assert host[2] == "indices" and host[5] == "valid_token_mask"


def test_wrap_block_hook() -> None:
    from auto_round.algorithms.quantization.sign_round.config import SignRoundConfig
    from auto_round.algorithms.quantization.sign_round.quantizer import (
        SignRoundQuantizer,
    )
    from auto_round.wrapper import wrapper_block

    q = SignRoundQuantizer(SignRoundConfig())
    assert q.wrapper_block is wrapper_block  # the instance attribute it calls
    calls: list[nn.Module] = []
    seams.wrap_block_hook(q, calls.append)
    assert q.wrapper_block is not wrapper_block


def test_count_samples_and_loss_valid_masks() -> None:
    from auto_round.algorithms.quantization.sign_round.quantizer import (
        SignRoundQuantizer,
    )

    assert _params(SignRoundQuantizer._count_samples) == ["inputs"]
    assert _params(SignRoundQuantizer._compute_valid_token_mask) == ["input_ids"]


def test_sample_valid_masks_during_tuning(tuned: dict[str, Any]) -> None:
    masks = tuned["sample_masks"]
    assert isinstance(masks, list) and len(masks) == 4
    assert all(isinstance(m, torch.Tensor) for m in masks)
    assert tuned["step_masks"] is not None


def test_offloader_of(tuned: dict[str, Any]) -> None:
    offloader = seams.offloader_of(tuned["ar"])
    assert offloader is not None and callable(offloader.reload)


def test_is_multiblock() -> None:
    from auto_round.wrapper import WrapperMultiblock

    assert inspect.isclass(WrapperMultiblock)
    assert not seams.is_multiblock(nn.Linear(2, 2))


def test_tuned_parameter_name_undoes_the_wrapper() -> None:
    from auto_round.wrapper import WrapperLinear

    # the wrapper keeps the module it wraps under this name
    assert _params(WrapperLinear.__init__)[0] == "orig_layer"
    assert seams.tuned_parameter_name("0.orig_layer.weight") == "0.weight"


def test_lookahead_layer_helpers() -> None:
    from auto_round.modeling.fused_moe.replace_modules import materialize_model_
    from auto_round.utils import convert_module_to_hp_if_necessary, mv_module_from_gpu

    assert _params(materialize_model_)[0] == "model"
    assert len(_params(convert_module_to_hp_if_necessary)) >= 3
    layer = nn.Linear(2, 2)
    seams.release_lookahead_layer(layer)  # a CPU layer stays where it is
    assert callable(mv_module_from_gpu) and layer.weight.device.type == "cpu"


def test_tuning_device() -> None:
    from auto_round.utils.device_manager import device_manager

    assert hasattr(device_manager, "device")
    assert seams.tuning_device() is not None


def test_save_seams() -> None:
    from auto_round.compressors.base import BaseOrchestrator

    params = _params(BaseOrchestrator.quantize_and_save)
    assert params[:2] == ["output_dir", "format"]
    assert callable(BaseOrchestrator.quantize)
    with seams.patch_orchestrator_save(lambda *a, **k: "staged"):
        assert BaseOrchestrator.quantize_and_save(object()) == "staged"
    assert _params(BaseOrchestrator.quantize_and_save)[:2] == ["output_dir", "format"]


def test_wrap_cli() -> None:
    import auto_round.cli.main as ar_main
    from auto_round.cli.algorithms import AlgorithmHandler

    assert _params(AlgorithmHandler.build_configs) == ["args", "common_kwargs"]
    assert _params(ar_main.tune) == ["args"]
    seams.wrap_cli(ar_main, lambda *a: [], lambda *a: None)  # idempotent
    assert getattr(AlgorithmHandler.build_configs, "_vsraq", False)
    assert getattr(ar_main.tune, "_vsraq", False)


def test_registry_resolution() -> None:
    from auto_round.algorithms.registry import coerce_config_class

    from vsraq_modifier.integrations.autoround import (
        VSRAQQuantizer,
        VSRAQSignRoundConfig,
    )

    seams.require_quantizer(VSRAQSignRoundConfig, VSRAQQuantizer)
    assert _params(coerce_config_class) == ["config", "target_cls"]
    with pytest.raises(RuntimeError, match="maps VSRAQSignRoundConfig"):
        seams.require_quantizer(VSRAQSignRoundConfig, nn.Linear)


def test_quantize_parser_keeps_host_abbreviations() -> None:
    import argparse

    from auto_round.cli import parser as parser_module

    assert _params(parser_module.build_quantize_parser)[0] == "prog"
    parser = argparse.ArgumentParser()
    parser.add_argument("--vllm_args")
    parser.add_argument("--vsraq_margin", type=float)
    parser.add_argument("--loss")
    # --v would be ambiguous with the plugin's flag; the host alone means vllm_args
    assert seams.host_abbreviations(parser, ["--v", "x"]) == ["--vllm_args", "x"]
    assert seams.host_abbreviations(parser, ["--vs=1"]) == ["--vs=1"]  # ours only
    assert seams.host_abbreviations(parser, ["--", "--v"]) == ["--", "--v"]
