"""The Python API: every option reaches AutoRound's tuning loop, whichever of the
documented ways selects the loss; refused settings fail loudly."""

from __future__ import annotations

import pytest
from loguru import logger

from tests.helpers.autoround import (
    RUN,
    calib_ids,
    save_model_dir,
    small_moe,
    tiny_tokenizer,
)
from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig, autoround
from vsraq_modifier.integrations.autoround.config import VSRAQOptionError
from vsraq_modifier.routers import UnsupportedModelError
from vsraq_modifier.testing import tiny_dense_model

#: every option away from its default (and from AutoRound's iters default)
OPTIONS = dict(
    loss="vsraq",
    value_weight=0.5,
    structure_weight=2.0,
    margin=0.1,
    value_target="logits",
    structure="set_nll",
    temperature=0.3,
    lookahead=False,
    lookahead_every=2,
)
ITERS = 2


@pytest.fixture
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


def _check_reached_loop(ar, expected: VSRAQConfig, iters: int) -> None:
    q = ar.alg_composer.block_quantizer
    assert type(q).__name__ == "VSRAQQuantizer"
    assert q.vsraq == expected
    assert q.objective.config == expected  # the object that computes the loss
    assert [r.layer for r in q.reports] == [0, 1]
    for r in q.reports:
        assert r.iters == iters  # iterations actually run in the tuning loop
        assert r.loss == expected.loss
        names = {
            n
            for n, lam in (
                ("value", expected.value_weight),
                ("structure", expected.structure_weight),
            )
            if lam > 0
        }
        assert set(r.terms_first) == names
        ahead = [k for k in r.agreement_after if "look-ahead" in k]
        assert bool(ahead) == (expected.lookahead and r.layer == 0)


@pytest.mark.slow
def test_helper_from_a_model_directory_with_offloading(tmp_path, log_lines):
    """``autoround(path, ...)``: every option and iters reach the loop; the model
    is loaded from a directory, so AutoRound offloads the untuned layers and the
    look-ahead layer has to be brought back."""
    path, data = save_model_dir(tmp_path, small_moe())
    options = {**OPTIONS, "lookahead": True}
    ar = autoround(
        str(path), None, iters=ITERS, dataset=str(data), **{**RUN, **options}
    )
    ar.quantize()
    assert ar.compress_context.low_cpu_mem_usage  # offloading was active
    _check_reached_loop(ar, VSRAQConfig(**options), ITERS)
    block_lines = [m for m in log_lines if m.startswith("vsraq layer ")]
    assert len(block_lines) == 2  # one line per block
    assert "host" in block_lines[0] and "structure" in block_lines[0]
    assert "agreement L0" in block_lines[0] and "L1 (look-ahead)" in block_lines[0]
    assert ar.alg_composer.block_quantizer.reports[0].reference_bytes == (
        # samples x tokens x (own + next router experts + layer 1's frozen
        # attention output, hidden 64: lookahead_attention reference) x 2 B
        4 * 32 * (8 + 8 + 64) * 2
    )


@pytest.mark.slow
def test_config_object_with_iters_given_to_autoround_directly():
    """``AutoRound(..., alg_configs=VSRAQSignRoundConfig(...), iters=2)``: AutoRound
    forwards ``iters`` only to configs whose class name contains "signround".
    Gradient accumulation over 2 minibatches of 2 samples per iteration."""
    from auto_round import AutoRound

    config = VSRAQSignRoundConfig(gradient_accumulate_steps=2, **OPTIONS)
    ar = AutoRound(
        small_moe(),
        tiny_tokenizer(),
        alg_configs=config,
        iters=ITERS,
        dataset=calib_ids(4),
        enable_torch_compile=False,
        **RUN,
    )
    ar.quantize()
    _check_reached_loop(ar, VSRAQConfig(**OPTIONS), ITERS)
    q = ar.alg_composer.block_quantizer
    assert q.gradient_accumulate_steps == 2
    assert q.objective.calls == 2 * ITERS  # one objective call per minibatch


def test_algorithm_alias_selects_the_quantizer_with_the_defaults():
    from auto_round import AutoRound

    ar = AutoRound(
        small_moe(),
        tiny_tokenizer(),
        alg_configs="vsraq",
        iters=7,
        dataset=calib_ids(4),
        enable_torch_compile=False,
        **RUN,
    )
    ar.post_init()
    q = ar.alg_composer.block_quantizer
    assert type(q).__name__ == "VSRAQQuantizer"
    assert q.vsraq == VSRAQConfig() and q.objective.config == VSRAQConfig()
    assert q.iters == 7


def test_compile_and_lfq_set_by_the_user_are_refused():
    """One policy (integrations/autoround/host_options.py): a conflicting option
    the user set is refused, naming the fix."""
    with pytest.raises(VSRAQOptionError, match="enable_lfq.*Remove enable_lfq"):
        VSRAQSignRoundConfig(iters=2, enable_lfq=True)
    with pytest.raises(VSRAQOptionError, match="enable_torch_compile.*Remove"):
        autoround(small_moe(), tiny_tokenizer(), enable_torch_compile=True, **RUN)
    # loss=mse: LFQ does not bypass AutoRound's own loss; compile still skips taps
    assert VSRAQSignRoundConfig(iters=2, loss="mse", enable_lfq=True).enable_lfq
    with pytest.raises(VSRAQOptionError, match="enable_torch_compile"):
        autoround(small_moe(), tiny_tokenizer(), loss="mse", enable_torch_compile=True)


def test_compile_turned_on_by_the_host_is_switched_off_with_a_log_line(log_lines):
    from auto_round import AutoRound

    config = VSRAQSignRoundConfig(iters=2)
    ar = AutoRound(
        small_moe(),
        tiny_tokenizer(),
        alg_configs=config,
        enable_torch_compile=True,
        dataset=calib_ids(4),
        **RUN,
    )
    ar.post_init()
    q = ar.alg_composer.block_quantizer
    assert ar.compress_context.enable_torch_compile is False
    assert q.can_compile_block_forward() is False
    assert any("torch.compile switched off" in m for m in log_lines)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(iters=0), "iters=0"),
        (dict(iters=0, loss="router_kl"), "round-to-nearest"),
        (dict(iters=-1), "iters=-1"),
        (dict(margin=-0.5), "margin"),
        (dict(temperature=0.0), "temperature"),
        (dict(value_weight=float("nan")), "value_weight"),
        (dict(loss="l1"), "loss"),
        (dict(value_target="weights"), "value_target"),
        (dict(nblocks=2), "nblocks"),
        (dict(enable_adam=True), "enable_adam"),
    ],
)
def test_refused_settings(kwargs, match):
    with pytest.raises(VSRAQOptionError, match=match):
        VSRAQSignRoundConfig(**kwargs)


def test_helper_refuses_what_autoround_would_drop():
    with pytest.raises(TypeError, match="unknown keyword"):
        autoround(small_moe(), tiny_tokenizer(), vsraq_margin=0.1)
    with pytest.raises(TypeError, match="alg_configs"):
        autoround(small_moe(), tiny_tokenizer(), alg_configs="signround")


def test_dense_model_is_refused_before_calibration():
    dense = tiny_dense_model()
    ar = autoround(dense, tiny_tokenizer(), dataset=calib_ids(4), **RUN)
    with pytest.raises(UnsupportedModelError, match="no router adapter"):
        ar.post_init()
