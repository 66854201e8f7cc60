"""Failures through ``VSRAQModifier`` (llm-compressor ``oneshot``): the memory
estimate and limit, NaN weights, and an interrupted run saved with
``staged_output`` (tiny two-layer Qwen3-MoE, 4 calibration samples of 32 tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from loguru import logger

from tests.helpers.llmcompressor import (
    load,
    modifier_args,
    run_oneshot,
    tiny_checkpoint,
    token_ids,
)
from vsraq_modifier.guards import CalibrationDataError, NonFiniteTuningError
from vsraq_modifier.memory import ENV_LIMIT, MemoryLimitError
from vsraq_modifier.output import staged_output

pytestmark = pytest.mark.usefixtures("llmc_env")
N, SEQ = 4, 32


@pytest.fixture
def model(checkpoints):
    return load(tiny_checkpoint("qwen3_moe", checkpoints / "two", num_hidden_layers=2))


def _run(model, out: str | None = None, **overrides):
    from vsraq_modifier import VSRAQModifier

    modifier = VSRAQModifier(**modifier_args(batch_size=N, **overrides))
    ids = token_ids(model.config.vocab_size, n=N, seq=SEQ)
    return run_oneshot(model, modifier, ids, output_dir=out)


@pytest.fixture
def reports(monkeypatch):
    from vsraq_modifier.integrations.autoround.quantizer import VSRAQQuantizer

    seen: list = []
    real = VSRAQQuantizer.quantize_block

    def spy(self, *args, **kwargs):
        before = len(self.reports)
        best = real(self, *args, **kwargs)
        seen.extend(self.reports[before:])
        return best

    monkeypatch.setattr(VSRAQQuantizer, "quantize_block", spy)
    return seen


def test_memory_estimate_is_logged_and_equals_the_cache(model, reports):
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        _run(model)
    finally:
        logger.remove(sink)
    (line,) = [m for m in lines if m.startswith("vsraq: routing memory about")]
    cached = [r.reference_bytes for r in reports]
    # tokens x E x 2 B x kept, + block 0's frozen look-ahead attention output
    # (lookahead_attention reference; tiny hidden size 64)
    assert cached == [N * SEQ * (8 * 2 + 64) * 2, N * SEQ * 8 * 2]
    assert (
        f"{N * SEQ} tokens x (16 experts over 2 router(s) kept + 64 values of "
        "frozen look-ahead attention)" in line
    )


def test_memory_over_the_limit_stops_before_tuning(model, reports, monkeypatch):
    monkeypatch.setenv(ENV_LIMIT, "0.000001")
    with pytest.raises(MemoryLimitError, match="nsamples"):
        _run(model)
    assert reports == []


def test_nan_weights_stop_naming_the_layer(model, tmp_path):
    with torch.no_grad():
        model.model.layers[1].mlp.experts.down_proj[0, 0, 0] = float("nan")
    out = tmp_path / "ckpt"
    with pytest.raises(NonFiniteTuningError, match="vsraq layer 1: the block loss"):
        with staged_output(out) as stage:
            _run(model, out=str(stage))
    assert not out.exists() and list(Path(tmp_path).iterdir()) == []


def test_empty_calibration_data_is_refused(model):
    """oneshot alone fails later with a bare StopIteration."""
    from vsraq_modifier import VSRAQModifier

    empty = torch.zeros(0, SEQ, dtype=torch.long)
    with pytest.raises(CalibrationDataError, match="dataset is empty"):
        run_oneshot(model, VSRAQModifier(**modifier_args()), empty)


@pytest.mark.parametrize("bad", ["beyond", "negative"])
def test_token_ids_outside_the_vocabulary_are_refused(model, bad):
    """oneshot alone fails in its traced first forward with a RuntimeError."""
    from vsraq_modifier import VSRAQModifier

    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (N, SEQ))
    ids[1, 2] = vocab + 5 if bad == "beyond" else -1
    with pytest.raises(
        CalibrationDataError, match=f"outside the model's vocabulary of {vocab}"
    ):
        run_oneshot(model, VSRAQModifier(**modifier_args()), ids)


def test_all_padding_calibration_data_is_refused(model, reports):
    """oneshot alone tunes on it as if it were text."""
    from datasets import Dataset
    from llmcompressor import oneshot

    from tests.helpers.llmcompressor import tiny_tokenizer
    from vsraq_modifier import VSRAQModifier

    ids = torch.zeros(N, SEQ, dtype=torch.long)
    padding = Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": torch.zeros_like(ids).tolist()}
    )
    with pytest.raises(CalibrationDataError, match="padding \\(attention_mask all 0"):
        oneshot(
            model=model,
            processor=tiny_tokenizer(model.config.vocab_size),
            dataset=padding,
            recipe=VSRAQModifier(**modifier_args()),
            num_calibration_samples=N,
            max_seq_length=SEQ,
        )
    assert reports == []
