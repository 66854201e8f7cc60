"""``auto-round --loss vsraq``: the flags on AutoRound's own command, what they
reach, what stays unchanged without them, and how errors end the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.autoround import save_model_dir, small_moe
from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.integrations.autoround.cli import FLAGS, main, on_cli_import
from vsraq_modifier.integrations.autoround.quantizer import VSRAQQuantizer
from vsraq_modifier.testing import tiny_dense_model

NEW_FLAGS = [*FLAGS.values(), "--vsraq_no_lookahead"]
SMALL = [
    "--iters",
    "2",
    "--nsamples",
    "4",
    "--seqlen",
    "32",
    "--batch_size",
    "2",
    "--device_map",
    "cpu",
    "--disable_torch_compile",
]


def _help(*cmd: str, **env: str) -> str:
    out = subprocess.run(
        [*cmd, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return " ".join(out.stdout.split())  # argparse wraps lines


@pytest.mark.slow
def test_help_lists_the_options_through_the_import_hook():
    auto_round_cmd = str(Path(sys.executable).parent / "auto-round")
    text = _help(auto_round_cmd)
    for flag in NEW_FLAGS:
        assert flag in text, flag
    assert "{mse,topk_mse,router_kl,vsraq}" in text
    assert "Without --loss, auto-round runs unchanged" in text
    # the hook is what adds them: switched off, auto-round is untouched ...
    assert "--loss" not in _help(auto_round_cmd, VSRAQ_DISABLE_HOOK="1")
    # ... and the explicit module works without it
    explicit = _help(
        sys.executable, "-m", "vsraq_modifier.autoround", VSRAQ_DISABLE_HOOK="1"
    )
    assert all(flag in explicit for flag in NEW_FLAGS)


def test_interpreter_start_up_loads_nothing_for_the_hook():
    """The .pth hook must cost nothing measurable in processes that never run
    auto-round: it adds no module at start-up (importlib.abc alone would pull in
    importlib.resources, pathlib, tempfile: ~30 ms)."""
    code = "import sys; print(' '.join(sorted(sys.modules)))"

    def modules(**env: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
        return set(out.stdout.split())

    with_hook = modules()
    assert with_hook == modules(VSRAQ_DISABLE_HOOK="1")
    assert "_vsraq_modifier_hook" in with_hook
    assert not {"importlib.abc", "pathlib", "torch", "auto_round"} & with_hook


@pytest.fixture
def model_dir(tmp_path):
    return save_model_dir(tmp_path / "model", small_moe())


@pytest.fixture
def quantizers(monkeypatch):
    """Every VSRAQQuantizer the command builds (a spy; the real one runs)."""
    made: list[VSRAQQuantizer] = []
    real = VSRAQQuantizer.__init__

    def spy(self, config):
        real(self, config)
        made.append(self)

    monkeypatch.setattr(VSRAQQuantizer, "__init__", spy)
    return made


def _run(model_dir, *args: str) -> int:
    path, data = model_dir
    return main(
        [
            "--model",
            str(path),
            "--dataset",
            str(data),
            "--output_dir",
            str(path.parent / "out"),
            *SMALL,
            *args,
        ]
    )


@pytest.mark.slow
def test_every_option_reaches_the_tuning_loop(model_dir, quantizers):
    assert (
        _run(
            model_dir,
            "--iters",
            "3",
            "--loss",
            "vsraq",
            "--vsraq_value_weight",
            "0.5",
            "--vsraq_structure_weight",
            "2",
            "--vsraq_margin",
            "0.1",
            "--vsraq_value_target",
            "scores",
            "--vsraq_structure",
            "set_nll",
            "--vsraq_temperature",
            "0.25",
            "--vsraq_lookahead_every",
            "3",
            "--vsraq_lookahead_attention",
            "full",
            "--vsraq_no_lookahead",
        )
        == 0
    )
    expected = VSRAQConfig(
        loss="vsraq",
        value_weight=0.5,
        structure_weight=2.0,
        margin=0.1,
        value_target="scores",
        structure="set_nll",
        temperature=0.25,
        lookahead=False,
        lookahead_every=3,
        lookahead_attention="full",
    )
    (q,) = quantizers
    assert q.vsraq == expected and q.objective.config == expected
    assert [r.iters for r in q.reports] == [3, 3]
    assert all(not any("look-ahead" in k for k in r.agreement_after) for r in q.reports)
    out = model_dir[0].parent / "out"
    assert list(out.rglob("model.safetensors"))  # AutoRound's own export ran


def test_without_loss_the_configs_are_autoround_s_own():
    import auto_round.cli.main as ar_main
    from auto_round.cli.algorithms import AlgorithmHandler

    on_cli_import(ar_main)
    parser = ar_main.build_quantize_parser()
    args = parser.parse_args(["--model", "m", "--iters", "5", "--lr", "0.01"])
    assert all(
        getattr(args, a.dest) is None
        for a in parser._actions
        if a.option_strings and a.option_strings[0] in NEW_FLAGS
    )
    common = ar_main._extract_common_quantization_kwargs(args)
    ours = AlgorithmHandler.build_configs(args, common)
    original = AlgorithmHandler.build_configs.__func__.__wrapped__
    theirs = original(AlgorithmHandler, args, common)
    assert [type(c) for c in ours] == [type(c) for c in theirs]
    assert type(ours[0]).__name__ == "SignRoundConfig"
    assert [vars(c).keys() for c in ours] == [vars(c).keys() for c in theirs]
    assert ours[0].iters == theirs[0].iters == 5 and ours[0].lr == 0.01


def test_algorithm_vsraq_is_loss_vsraq():
    import auto_round.cli.main as ar_main
    from auto_round.cli.algorithms import AlgorithmHandler

    from vsraq_modifier.integrations.autoround import VSRAQSignRoundConfig

    on_cli_import(ar_main)
    parser = ar_main.build_quantize_parser()
    for argv in (["--algorithm", "vsraq"], ["--loss", "vsraq"]):
        args = parser.parse_args(["--model", "m", "--iters", "4", *argv])
        common = ar_main._extract_common_quantization_kwargs(args)
        (config,) = AlgorithmHandler.build_configs(args, common)
        assert type(config) is VSRAQSignRoundConfig
        assert config.vsraq == VSRAQConfig() and config.iters == 4


@pytest.mark.slow
def test_without_loss_plain_autoround_runs(model_dir, monkeypatch):
    from auto_round.algorithms.quantization.sign_round.quantizer import (
        SignRoundQuantizer,
    )

    made: list[type] = []
    real = SignRoundQuantizer.__init__

    def spy(self, config):
        real(self, config)
        made.append(type(self))

    monkeypatch.setattr(SignRoundQuantizer, "__init__", spy)
    assert _run(model_dir) == 0
    assert made == [SignRoundQuantizer]  # AutoRound's own, not VSRAQQuantizer


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--loss", "vsraq", "--iters", "0"], "iters 0"),
        (["--loss", "router_kl", "--vsraq_margin", "-1"], "margin"),
        (["--loss", "vsraq", "--vsraq_temperature", "0"], "temperature"),
        (["--vsraq_margin", "0.1"], "without --loss"),
        (["--loss", "vsraq", "--algorithm", "awq"], "needs AutoRound's tuning"),
        (["--loss", "vsraq", "--enable_adam"], "enable_adam"),
        (["--loss", "vsraq", "--nblocks", "2"], "nblocks"),
        # AutoRound would reset a negative value to 200 and run
        (["--loss", "vsraq", "--iters", "-1"], "--iters -1: must be >= 0"),
        # finite in float64, inf in the float32 block loss: bounded at parse
        (["--loss", "vsraq", "--vsraq_value_weight", "1e300"], "value_weight"),
        (["--loss", "mse", "--vsraq_margin", "0.1"], "margin has no effect"),
        (["--loss", "mse", "--vsraq_router_refit_ridge", "0.1"], "re-fit is off"),
        (["--loss", "mse", "--vsraq_router_refit_accept_se", "1"], "re-fit is off"),
        (["--loss", "vsraq", "--vsraq_router_refit_accept_se", "-1"], "accept_se"),
        (["--loss", "mse", "--vsraq_router_refit_target", "logits"], "re-fit is off"),
        (["--loss", "vsraq", "--enable_torch_compile"], "--enable_torch_compile"),
        (["--loss", "vsraq", "--enable_lfq"], "Remove --enable_lfq"),
    ],
)
def test_option_errors_exit_2_with_a_message(args, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model", "unused", "--device_map", "cpu", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "auto-round: error:" in err and match in err


def test_unknown_loss_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model", "unused", "--loss", "l2"])
    assert e.value.code == 2
    assert "invalid choice: 'l2'" in capsys.readouterr().err


@pytest.mark.slow
def test_dense_model_exits_2_naming_the_supported_families(tmp_path, capsys):
    dense = tiny_dense_model()
    dirs = save_model_dir(tmp_path / "dense", dense)
    with pytest.raises(SystemExit) as e:
        _run(dirs, "--loss", "vsraq")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no router adapter" in err and "qwen3_moe" in err
