"""Failures through the AutoRound integration: early, clear, and never a checkpoint
that looks complete when it is not (tiny Qwen3-MoE, 4 samples x 32 tokens, CPU).

Injected faults (KeyboardInterrupt in the tuning loop or in AutoRound's shard
writer) use monkeypatch on the real host; everything else runs unmodified."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from loguru import logger

from tests.helpers.autoround import (
    RUN,
    calib_ids,
    save_model_dir,
    small_moe,
    tiny_tokenizer,
)
from vsraq_modifier.guards import CalibrationDataError, NonFiniteTuningError
from vsraq_modifier.integrations.autoround import autoround
from vsraq_modifier.integrations.autoround.quantizer import VSRAQQuantizer
from vsraq_modifier.memory import ENV_LIMIT, MemoryLimitError
from vsraq_modifier.output import OutputDirError

pytestmark = pytest.mark.usefixtures("host_env")

#: AutoRound's export directory for an in-memory model (no name_or_path), W4A16
EXPORT = "w4g128"


def _ar(model=None, **kwargs):
    args = {**RUN, "dataset": calib_ids(RUN["nsamples"]), "iters": 2, **kwargs}
    return autoround(small_moe() if model is None else model, tiny_tokenizer(), **args)


def _quantizer(ar):
    return ar.alg_composer.block_quantizer


@pytest.fixture
def tuned(monkeypatch) -> list[int]:
    """Decoder layers whose tuning started (a spy; the real method runs)."""
    started: list[int] = []
    real = VSRAQQuantizer.quantize_block

    def spy(self, block, *args, **kwargs):
        started.append(self.routing.index_of(block))
        return real(self, block, *args, **kwargs)

    monkeypatch.setattr(VSRAQQuantizer, "quantize_block", spy)
    return started


def _partials(where: Path = Path(".")) -> list[Path]:
    return [p for p in where.rglob("*") if ".partial-" in p.name]


def _staged_files() -> list[Path]:
    return [f for d in _partials() for f in d.rglob("*") if f.is_file()]


@pytest.fixture
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


# --- memory ------------------------------------------------------------------------
def test_memory_estimate_is_logged_and_equals_the_cache(log_lines):
    ar = _ar()
    ar.quantize()
    q = _quantizer(ar)
    cached = [r.reference_bytes for r in q.reports]
    # block 0 keeps its own router and the look-ahead one, block 1 its own:
    # tokens x experts x 2 bytes x routers kept
    tokens, experts = RUN["nsamples"] * RUN["seqlen"], 8
    # + the look-ahead layer's frozen attention output (lookahead_attention
    # reference; tiny hidden size 64) in block 0
    assert cached == [tokens * (experts * 2 + 64) * 2, tokens * experts * 2]
    estimate = q.memory  # what bind() computed and logged
    assert estimate.reference_bytes == max(cached)  # exact: tolerance 0
    assert estimate.lookahead_bytes > 0
    assert any(m.startswith("vsraq: routing memory about") for m in log_lines)


def test_memory_over_the_limit_stops_before_calibration(monkeypatch, tuned):
    monkeypatch.setenv(ENV_LIMIT, "0.000001")  # ~1 KB
    ar = _ar()
    with pytest.raises(MemoryLimitError, match="nsamples") as err:
        ar.quantize()
    assert ENV_LIMIT in str(err.value) and "lookahead=False" in str(err.value)
    assert tuned == []


# --- calibration data ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("dataset", "match"),
    [
        ([], "dataset is empty"),
        ([torch.randint(3, 128, (1, 8)) for _ in range(4)], "shorter than seqlen=32"),
    ],
    ids=["empty", "too-short"],
)
def test_unusable_calibration_data_is_refused_before_calibration(dataset, match):
    """AutoRound itself logs an error and calls exit(-1) for both."""
    ar = _ar(dataset=dataset)
    with pytest.raises(CalibrationDataError, match=match):
        ar.quantize()


def test_no_token_left_for_the_loss_is_refused():
    """Every position is the tokenizer's pad token (id 0). Without the check the
    run "succeeds" with a zero loss: plain RTN."""
    ar = _ar(dataset=[torch.zeros(1, 32, dtype=torch.long) for _ in range(4)])
    with pytest.raises(CalibrationDataError, match="vsraq layer 0: no calibration"):
        ar.quantize()


def test_one_token_samples_are_refused_before_anything_loads():
    """One token per sample is the last, which has no next-token target: refused
    when the compressor is built (entry_checks), before calibration."""
    from vsraq_modifier.inputs import SettingError

    one = [torch.randint(3, 128, (1, 1)) for _ in range(4)]
    with pytest.raises(SettingError, match="at least 2 tokens"):
        _ar(dataset=one, seqlen=1)


# --- NaN / inf -----------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["mse", "vsraq"])
def test_nan_weights_stop_naming_the_layer_and_write_nothing(loss):
    model = small_moe()
    with torch.no_grad():
        model.model.layers[1].mlp.experts.down_proj[0, 0, 0] = float("nan")
    ar = _ar(model, loss=loss)
    with pytest.raises(NonFiniteTuningError) as err:
        ar.quantize_and_save("out", format="auto_round")
    msg = str(err.value)
    assert msg.startswith("vsraq layer 1: the block loss is nan"), msg
    assert "mlp.experts" in msg and "of decoder layer 1" in msg
    assert not Path("out").exists() and _partials() == []


def test_nan_reached_through_the_lookahead_names_router_and_layer():
    model = small_moe()
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight[0, 0] = float("nan")
    ar = _ar(model, loss="vsraq")
    with pytest.raises(NonFiniteTuningError) as err:
        ar.quantize()
    msg = str(err.value)
    assert msg.startswith("vsraq layer 0: router L1 (look-ahead)"), msg
    assert "self_attn.q_proj.weight of decoder layer 1" in msg


# --- output directory ----------------------------------------------------------------
def _interrupt_tuning_at_layer_1(monkeypatch, seen: list) -> None:
    real = VSRAQQuantizer.vsraq_step_loss

    def step_loss(self, *args, **kwargs):
        if self.session is not None and self.session.index == 1:
            seen.extend(_staged_files())
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VSRAQQuantizer, "vsraq_step_loss", step_loss)


def _interrupt_saving(monkeypatch, seen: list) -> None:
    from auto_round.compressors.shard_writer import ShardWriter

    def finalize(self):
        seen.extend(_staged_files())
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardWriter, "finalize", finalize)


@pytest.mark.parametrize(
    "interrupt",
    [_interrupt_tuning_at_layer_1, _interrupt_saving],
    ids=["tuning", "saving"],
)
def test_interrupt_leaves_no_checkpoint(interrupt, monkeypatch):
    from auto_round.compressors.shard_writer import ShardWriter

    # shards of 16 KB instead of >= 1 GB: the writer flushes while tuning, as it
    # does on real models
    monkeypatch.setattr(ShardWriter, "_parse_size", lambda self, size: 16 * 1024)
    seen: list[Path] = []
    interrupt(monkeypatch, seen)
    with pytest.raises(KeyboardInterrupt):
        _ar().quantize_and_save("out", format="auto_round")
    # AutoRound's shard writer had written layer 0 (staged) when it was stopped
    assert any(p.suffix == ".safetensors" for p in seen), seen
    assert not Path("out").exists() and _partials() == []


def test_existing_checkpoint_is_refused_before_tuning_unless_overwrite(tuned):
    old = Path("out") / EXPORT
    old.mkdir(parents=True)
    (old / "config.json").write_text("another checkpoint")
    (old / "model-00002-of-00002.safetensors").write_text("stale shard")
    ar = _ar()
    with pytest.raises(OutputDirError, match=f"{EXPORT} exists and is not empty"):
        ar.quantize_and_save("out", format="auto_round")
    assert tuned == []
    assert (old / "config.json").read_text() == "another checkpoint"

    _, folder = _ar().quantize_and_save("out", format="auto_round", overwrite=True)
    assert Path(folder) == old.absolute()
    names = {p.name for p in old.iterdir()}
    assert (
        "model.safetensors" in names and "model-00002-of-00002.safetensors" not in names
    )
    assert (old / "config.json").read_text() != "another checkpoint"
    assert _partials() == []


def test_unwritable_output_is_refused_before_tuning(tmp_path, tuned):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    target = ro if not _writable(ro) else Path("/sys")  # root ignores modes
    ar = _ar()
    try:
        with pytest.raises(OutputDirError, match="not writable"):
            ar.quantize_and_save(str(target / "out"), format="auto_round")
    finally:
        ro.chmod(0o755)
    assert tuned == []


def _writable(path: Path) -> bool:
    try:
        (path / "probe").write_text("x")
    except PermissionError:
        return False
    (path / "probe").unlink()
    return True


def test_cli_existing_checkpoint_exits_2_before_tuning(tmp_path, capsys):
    from vsraq_modifier.integrations.autoround.cli import main

    path, data = save_model_dir(tmp_path / "model", small_moe())
    old = tmp_path / "out" / "model-w4g128"
    old.mkdir(parents=True)
    (old / "config.json").write_text("another checkpoint")
    args = ["--model", str(path), "--dataset", str(data), "--output_dir"]
    args += [str(tmp_path / "out"), "--iters", "2", "--nsamples", "4"]
    args += ["--seqlen", "32", "--device_map", "cpu", "--loss", "vsraq"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "auto-round: error: output directory" in err and "model-w4g128" in err
    assert (old / "config.json").read_text() == "another checkpoint"
