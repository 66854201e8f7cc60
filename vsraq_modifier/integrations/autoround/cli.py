"""``auto-round --loss vsraq``: the VSRAQ options on AutoRound's own command line.

AutoRound 0.15.1 has no plugin entry points. The post-import hook
(``_vsraq_modifier_hook.py``) calls :func:`on_cli_import` right after
``auto_round.cli.main`` has been imported, which

- registers an ``AlgorithmHandler`` named "vsraq" whose argument group adds
  ``--loss`` and ``--vsraq_*`` to ``auto-round --help``;
- routes AutoRound's config building through :func:`build_vsraq_configs`: with
  ``--loss`` (or ``--algorithm vsraq``) its SignRound config becomes a
  :class:`VSRAQSignRoundConfig`; without it nothing changes;
- routes ``tune`` through :func:`run_tune` (both through ``seams.wrap_cli``).

``python -m vsraq_modifier.autoround`` does the same explicitly.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

from loguru import logger

from vsraq_modifier.config import VSRAQConfig

__all__ = [
    "FLAGS",
    "add_vsraq_arguments",
    "build_vsraq_configs",
    "main",
    "on_cli_import",
]

_FIELDS = VSRAQConfig.model_fields

#: VSRAQConfig field -> auto-round flag (``lookahead`` also has --vsraq_no_lookahead)
FLAGS: dict[str, str] = {
    name: "--loss" if name == "loss" else f"--vsraq_{name}" for name in _FIELDS
}
_DEST = {name: "loss" if name == "loss" else f"vsraq_{name}" for name in _FIELDS}
_handler: type | None = None


def _help(name: str) -> str:
    info = _FIELDS[name]
    if info.default is None:  # the description says what None means
        return str(info.description)
    return f"{info.description} Default: {info.default}."


def add_vsraq_arguments(group: Any) -> None:
    """The VSRAQ flags; all default to None (= not given), the effective
    defaults come from :class:`VSRAQConfig`."""
    losses = list(VSRAQConfig.model_fields["loss"].annotation.__args__)
    group.add_argument(
        "--loss",
        choices=losses,
        default=None,
        help="Tune with a routing-aware loss (vsraq-modifier; MoE models only). "
        "mse: AutoRound's own loss, with router agreement logged per block; "
        "topk_mse / router_kl: baselines (weight: --vsraq_value_weight); "
        "vsraq: value + structure alignment. "
        "Without --loss, auto-round runs unchanged.",
    )
    for name, kind in (
        ("value_weight", float),
        ("structure_weight", float),
        ("margin", float),
        ("temperature", float),
        ("lookahead_every", int),
        ("max_flip_share", float),
        ("router_refit_ridge", float),
        ("router_refit_accept_se", float),
    ):
        group.add_argument(
            FLAGS[name],
            dest=_DEST[name],
            type=kind,
            default=None,
            metavar="N" if kind is int else "X",
            help=_help(name),
        )
    for name in (
        "value_target",
        "structure",
        "lookahead_attention",
        "best_iteration",
        "router_refit",
        "router_refit_target",
    ):
        choices = list(_FIELDS[name].annotation.__args__)
        group.add_argument(
            FLAGS[name],
            dest=_DEST[name],
            choices=choices,
            default=None,
            help=_help(name),
        )
    ahead = group.add_mutually_exclusive_group()
    ahead.add_argument(
        "--vsraq_lookahead",
        dest=_DEST["lookahead"],
        action="store_const",
        const=True,
        default=None,
        help=_help("lookahead"),
    )
    ahead.add_argument(
        "--vsraq_no_lookahead",
        dest=_DEST["lookahead"],
        action="store_const",
        const=False,
        help="Switch the look-ahead term off (ablation).",
    )


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """VSRAQ options given on the command line (loss excluded)."""
    return {
        name: getattr(args, _DEST[name])
        for name in _FIELDS
        if name != "loss" and getattr(args, _DEST[name], None) is not None
    }


def _algorithm_names(args: argparse.Namespace) -> list[str]:
    raw = getattr(args, "algorithm", None) or ""
    return [n.strip().lower() for n in raw.split(",") if n.strip()]


def _requested_loss(args: argparse.Namespace) -> str | None:
    loss = getattr(args, "loss", None)
    if loss is None and "vsraq" in _algorithm_names(args):
        return "vsraq"
    return loss


def _host_options(args: argparse.Namespace) -> dict[str, Any]:
    """The host options of the command line that the conflict rules read, as the
    user gave them (None: not given)."""
    from vsraq_modifier.integrations.autoround.host_options import HOST_OPTIONS

    values = {name: getattr(args, name, None) for name in HOST_OPTIONS}
    return {k: v for k, v in values.items() if v is not None}


def build_vsraq_configs(
    original: Any, cls: Any, args: argparse.Namespace, common_kwargs: dict
) -> list:
    """AutoRound's configs, with SignRound turned into VSRAQ when --loss is set."""
    from auto_round.algorithms.quantization.sign_round.config import SignRoundConfig

    from vsraq_modifier.integrations.autoround.config import (
        VSRAQOptionError,
        vsraq_config,
    )
    from vsraq_modifier.integrations.autoround.host_options import check_host_options
    from vsraq_modifier.integrations.autoround.quantizer import VSRAQSignRoundConfig

    loss, given = _requested_loss(args), _given(args)
    if "vsraq" in _algorithm_names(args):
        args = copy.copy(args)
        args.algorithm = (
            ",".join(n for n in _algorithm_names(args) if n != "vsraq") or None
        )
    if loss is None:
        if given:
            flags = ", ".join(FLAGS[n] for n in given)
            raise VSRAQOptionError(f"{flags} given without --loss; add --loss vsraq")
        return original(cls, args, common_kwargs)
    vsraq = vsraq_config(loss=loss, **given)
    # before AutoRound builds its config (which rewrites a negative --iters)
    decision = check_host_options(vsraq, _host_options(args), flag_style=True)
    configs, done = [], False
    for config in original(cls, args, common_kwargs):
        if isinstance(config, SignRoundConfig) and not done:
            config = VSRAQSignRoundConfig.from_signround(config, vsraq, decision)
            done = True
        configs.append(config)
    if not done:
        if vsraq.is_routing_loss:
            raise VSRAQOptionError(
                f"--loss {loss} needs AutoRound's tuning (the auto_round algorithm), "
                f"but --algorithm {getattr(args, 'algorithm', None)} runs no tuning; "
                "add auto_round, e.g. --algorithm awq,auto_round"
            )
        logger.info("vsraq: --loss mse without tuning (iters 0): plain AutoRound RTN")
    return configs


def _handler_class() -> type:
    """The "vsraq" AlgorithmHandler (defined on first use: importing
    auto_round.cli must not happen while this module is being imported)."""
    global _handler
    if _handler is not None:
        return _handler
    from auto_round.cli.algorithms import AlgorithmHandler

    from vsraq_modifier.integrations.autoround.quantizer import VSRAQSignRoundConfig

    class VSRAQ(AlgorithmHandler):
        name = "vsraq"
        aliases = ("vsraq",)
        summary = "Routing-aware loss for MoE models (vsraq-modifier): --loss ..."
        config_factory = VSRAQSignRoundConfig

        def register(self, group: Any) -> None:
            add_vsraq_arguments(group)

        def build(self, args: Any, common_kwargs: dict[str, Any]) -> Any:
            from vsraq_modifier.integrations.autoround.config import vsraq_config
            from vsraq_modifier.integrations.autoround.host_options import (
                check_host_options,
            )

            loss = getattr(args, "loss", None) or "vsraq"
            vsraq = vsraq_config(loss=loss, **_given(args))
            decision = check_host_options(vsraq, _host_options(args), flag_style=True)
            signround = AlgorithmHandler.get("auto_round").build(args, common_kwargs)
            return VSRAQSignRoundConfig.from_signround(signround, vsraq, decision)

    _handler = VSRAQ
    return VSRAQ


def run_tune(original: Any, args: argparse.Namespace) -> Any:
    """AutoRound's ``tune(args)`` for a run with --loss: torch.compile off,
    inputs checked before anything loads, the checkpoint staged (complete or
    absent), and the project's errors as one line: exit 2 for options, model,
    data, memory or output, exit 1 for NaN/inf during tuning. Without --loss and
    --vsraq_* flags: AutoRound's own, unchanged."""
    if _requested_loss(args) is None and not _given(args):
        return original(args)
    from vsraq_modifier.entry_checks import check_cli_inputs
    from vsraq_modifier.guards import CalibrationDataError, NonFiniteTuningError
    from vsraq_modifier.inputs import InputError
    from vsraq_modifier.integrations.autoround.config import VSRAQOptionError
    from vsraq_modifier.integrations.autoround.saving import staged_saves_in_cli
    from vsraq_modifier.memory import MemoryLimitError
    from vsraq_modifier.output import OutputDirError
    from vsraq_modifier.routers import UnsupportedModelError

    try:
        if getattr(args, "enable_torch_compile", None) is None:  # host default
            args.enable_torch_compile = False
            logger.info(
                "vsraq: --loss given: torch.compile off (router hooks need "
                "eager blocks; on a CPU compiling is slower than tuning)"
            )
        check_cli_inputs(args)  # model, dataset files, disk space: before loading
        with staged_saves_in_cli():
            return original(args)
    except (
        VSRAQOptionError,
        UnsupportedModelError,
        CalibrationDataError,
        MemoryLimitError,
        OutputDirError,
        InputError,
    ) as e:
        print(f"auto-round: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except NonFiniteTuningError as e:
        print(f"auto-round: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as e:
        full = write_failure(e, getattr(args, "output_dir", None))
        if full is None:
            raise
        print(f"auto-round: error: {full}", file=sys.stderr)
        raise SystemExit(2) from None


def write_failure(error: BaseException, output_dir: Any) -> str | None:
    """One line for a checkpoint write that failed for lack of space (the free
    space check before tuning is a lower bound), or None for any other error.
    Nothing partial is left: the save was staged."""
    import errno

    no_space = isinstance(error, OSError) and error.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
    )
    text = str(error)
    if not no_space and type(error).__name__ == "SafetensorError":
        no_space = "No space left" in text or "os error 28" in text
    if not no_space:
        return None
    return (
        f"writing the checkpoint to {output_dir} failed: no space left on its file "
        "system (nothing partial was left). Free space there or choose another "
        "--output_dir."
    )


def on_cli_import(module: Any) -> None:
    """Post-import hook target for ``auto_round.cli.main`` (idempotent)."""
    from vsraq_modifier.integrations.autoround.seams import wrap_cli

    _handler_class()
    wrap_cli(module, build_vsraq_configs, run_tune)


def main(argv: list[str] | None = None) -> int:
    """Run ``auto-round`` with VSRAQ registered; ``argv`` without the program name
    (default: ``sys.argv[1:]``)."""
    import auto_round.cli.main as ar_main

    on_cli_import(ar_main)
    saved = sys.argv
    if argv is not None:
        sys.argv = ["auto-round", *argv]
    try:
        ar_main.run()
    finally:
        sys.argv = saved
    return 0
