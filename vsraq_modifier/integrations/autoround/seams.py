"""Every place where vsraq-modifier touches AutoRound's internals (auto-round 0.15.1).

The only file that names a private AutoRound attribute or replaces a host object;
everything else calls these named functions. tests/unit/integrations/autoround/
test_seams.py checks, seam by seam, that AutoRound still offers what each one uses
(by signature or attribute), so an AutoRound upgrade breaks one named test.
docs/architecture.md lists the seams and why each is needed.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from auto_round.algorithms.quantization.sign_round.quantizer import SignRoundQuantizer
from auto_round.wrapper import wrapper_block
from torch import nn

__all__ = [
    "LossSeam",
    "autoround_keywords",
    "count_samples",
    "is_multiblock",
    "loss_valid_masks",
    "offloader_of",
    "patch_instance_save",
    "patch_orchestrator_save",
    "quantizer_for",
    "require_quantizer",
    "release_lookahead_layer",
    "restore_lookahead_layer",
    "sample_valid_masks",
    "tuned_parameter_name",
    "wrap_cli",
    "wrap_block_hook",
]


# --- the Python API: which keyword goes where ---------------------------------
def autoround_keywords() -> tuple[set[str], set[str]]:
    """(SignRound tuning + scheme keywords that belong in the algorithm config,
    every keyword ``AutoRound(...)`` accepts).

    ``AutoRound(**kwargs)`` drops unknown keywords with only a warning; its own
    tables of who owns which keyword are private (``auto_round.autoround``)."""
    from auto_round import AutoRound
    from auto_round.autoround import (
        _ENTRY_KWARG_OWNERS,
        _SCHEME_FIELDS,
        _SIGNROUND_FIELDS,
    )

    entry = set(inspect.signature(AutoRound.__new__).parameters) - {"cls", "kwargs"}
    return set(_SIGNROUND_FIELDS) | set(_SCHEME_FIELDS), entry | set(
        _ENTRY_KWARG_OWNERS
    )


# --- registration ---------------------------------------------------------------
def quantizer_for(config: Any) -> type:
    """The quantizer class AutoRound will run for ``config`` (its registry walks
    the config's MRO: an unregistered subclass silently gets its parent's)."""
    from auto_round.algorithms.registry import resolve_pipeline_member

    return resolve_pipeline_member(config)


def require_quantizer(config_cls: type, quantizer_cls: type) -> None:
    """Raise unless AutoRound resolves ``config_cls`` to ``quantizer_cls``."""
    probe = object.__new__(config_cls)  # the registry looks at the type only
    found = quantizer_for(probe)
    if found is not quantizer_cls:
        raise RuntimeError(
            f"AutoRound's registry maps {config_cls.__name__} to {found.__name__}, "
            f"not {quantizer_cls.__name__}: the VSRAQ loss would not run. Import "
            "the config from vsraq_modifier.integrations.autoround (which "
            "registers the quantizer); auto-round 0.15.x expected."
        )


# --- the quantizer: where the routing loss plugs in ---------------------------
class LossSeam(SignRoundQuantizer):
    """Overrides SignRound's private per-step loss, ``_get_loss``: the only place
    that sees each tuning step's host loss with its sample indices and valid-token
    masks. A subclass implements :meth:`vsraq_step_loss`."""

    def vsraq_step_loss(
        self, host: torch.Tensor, indices: Any, masks: Any
    ) -> torch.Tensor:
        return host

    def _get_loss(
        self,
        pred_output: torch.Tensor,
        ref_output: torch.Tensor,
        indices: Any,
        loss_func: Any,
        device: Any = "cpu",
        valid_token_mask: Any = None,
        input_ids: Any = None,
    ) -> torch.Tensor:
        host = super()._get_loss(
            pred_output,
            ref_output,
            indices,
            loss_func,
            device,
            valid_token_mask,
            input_ids,
        )
        return self.vsraq_step_loss(host, indices, valid_token_mask)


def wrap_block_hook(
    quantizer: SignRoundQuantizer, after: Callable[[nn.Module], None]
) -> None:
    """Call ``after(block)`` once AutoRound has wrapped a block's linears for
    tuning, before its first tuning step (AutoRound calls the instance attribute
    ``wrapper_block`` there)."""

    def wrapped(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
        names = wrapper_block(block, *args, **kwargs)
        after(block)
        return names

    quantizer.wrapper_block = wrapped


def count_samples(quantizer: SignRoundQuantizer, inputs: Any) -> int:
    """Calibration samples in AutoRound's block inputs (a list, or a dict of
    lists for non-text models)."""
    if isinstance(inputs, list):
        return len(inputs)
    return quantizer._count_samples(inputs)


def sample_valid_masks(quantizer: SignRoundQuantizer) -> list | None:
    """AutoRound's per-sample valid-token masks of this run (1 = the token counts
    in the loss), cached by ``quantize_block``; None before or without them."""
    return getattr(quantizer, "_cached_valid_token_mask", None) or None


def loss_valid_masks(quantizer: SignRoundQuantizer, input_ids: Any) -> list | None:
    """The valid-token masks AutoRound computes from the calibration input ids
    (padding and each sample's last position drop out of its loss)."""
    if not input_ids or not isinstance(input_ids, list):
        return None
    return quantizer._compute_valid_token_mask(input_ids)


def is_multiblock(block: nn.Module) -> bool:
    """AutoRound's wrapper for tuning several decoder layers jointly (nblocks>1)."""
    from auto_round.wrapper import WrapperMultiblock

    return isinstance(block, WrapperMultiblock)


def tuned_parameter_name(name: str) -> str:
    """A parameter name of a block wrapped for tuning, as the model names it
    (AutoRound's wrappers hold the original module as ``orig_layer``)."""
    return name.replace(".orig_layer.", ".")


def offloader_of(orchestrator: Any) -> Any:
    """AutoRound's offload manager (low_cpu_mem_usage), or None."""
    return getattr(orchestrator, "_offloader", None)


def restore_lookahead_layer(
    model: nn.Module,
    layer: nn.Module,
    name: str,
    *,
    offloader: Any,
    amp_dtype: Any,
    device: torch.device,
) -> None:
    """Bring an untuned decoder layer back for the look-ahead: AutoRound may have
    offloaded it (low_cpu_mem_usage: weights emptied or on meta) and keeps fused
    MoE experts unmaterialised until their turn."""
    from auto_round.modeling.fused_moe.replace_modules import materialize_model_
    from auto_round.utils import convert_module_to_hp_if_necessary

    if offloader is not None:
        offloader.reload(model, name)
    materialize_model_(layer)
    convert_module_to_hp_if_necessary(layer, amp_dtype, device)


def release_lookahead_layer(layer: nn.Module) -> None:
    """Move a look-ahead layer off the accelerator again (AutoRound's helper)."""
    from auto_round.utils import mv_module_from_gpu

    mv_module_from_gpu(layer)


def tuning_device() -> Any:
    """The device AutoRound tunes on (its device manager), or "cpu"."""
    try:
        from auto_round.utils.device_manager import device_manager

        return device_manager.device
    except Exception:  # noqa: BLE001 - unknown device: CPU memory is checked
        return "cpu"


# --- saving: the checkpoint complete or absent ---------------------------------
def patch_instance_save(ar: Any, wrapper: Callable[..., Any]) -> None:
    """Replace one compressor's ``quantize_and_save`` by ``wrapper(ar, original,
    *args, **kwargs)`` (integrations/autoround/saving.py stages it)."""
    original = ar.quantize_and_save

    def quantize_and_save(*args: Any, **kwargs: Any) -> Any:
        return wrapper(ar, original, *args, **kwargs)

    quantize_and_save._vsraq_staged = True  # type: ignore[attr-defined]
    quantize_and_save.__wrapped__ = original  # type: ignore[attr-defined]
    ar.quantize_and_save = quantize_and_save


def is_save_patched(ar: Any) -> bool:
    return bool(getattr(ar.quantize_and_save, "_vsraq_staged", False))


@contextlib.contextmanager
def hook_quantize(ar: Any, before: Callable[[], None]) -> Iterator[None]:
    """Call ``before()`` when the compressor starts ``quantize`` (it has set its
    export directory then, and calibrated nothing yet)."""
    quantize = ar.quantize

    def checked_quantize(*args: Any, **kwargs: Any) -> Any:
        before()
        return quantize(*args, **kwargs)

    ar.quantize = checked_quantize
    try:
        yield
    finally:
        ar.__dict__.pop("quantize", None)


@contextlib.contextmanager
def patch_orchestrator_save(wrapper: Callable[..., Any]) -> Iterator[None]:
    """Stage every ``quantize_and_save`` for the duration (the ``auto-round``
    command builds its compressor itself, out of reach of an instance patch)."""
    from auto_round.compressors.base import BaseOrchestrator

    original = BaseOrchestrator.quantize_and_save

    def quantize_and_save(self: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapper(self, original.__get__(self, type(self)), *args, **kwargs)

    BaseOrchestrator.quantize_and_save = quantize_and_save
    try:
        yield
    finally:
        BaseOrchestrator.quantize_and_save = original


# --- the auto-round command ---------------------------------------------------
def wrap_cli(
    module: Any,
    build_configs: Callable[[Any, Any, Any, dict], list],
    tune: Callable[[Any, Any], Any],
) -> None:
    """Route AutoRound's command through the plugin (idempotent):
    ``AlgorithmHandler.build_configs`` becomes ``build_configs(original, cls,
    args, common_kwargs)``; ``auto_round.cli.main.tune`` becomes
    ``tune(original, args)``; the quantize command's parser expands option
    abbreviations as the host alone would (:func:`host_abbreviations`). The host
    has no plugin entry point for any of them."""
    from auto_round.cli.algorithms import AlgorithmHandler

    if not getattr(AlgorithmHandler.build_configs, "_vsraq", False):
        original = AlgorithmHandler.build_configs.__func__

        def wrapped_build(cls: Any, args: Any, common_kwargs: dict) -> list:
            return build_configs(original, cls, args, common_kwargs)

        wrapped_build._vsraq = True  # type: ignore[attr-defined]
        wrapped_build.__wrapped__ = original  # type: ignore[attr-defined]
        AlgorithmHandler.build_configs = classmethod(wrapped_build)
    if not getattr(module.tune, "_vsraq", False):
        original_tune = module.tune

        def wrapped_tune(args: Any) -> Any:
            return tune(original_tune, args)

        wrapped_tune._vsraq = True  # type: ignore[attr-defined]
        wrapped_tune.__wrapped__ = original_tune  # type: ignore[attr-defined]
        module.tune = wrapped_tune
    from auto_round.cli import parser as parser_module

    for owner in (parser_module, module):
        build = owner.build_quantize_parser
        if not getattr(build, "_vsraq", False):
            owner.build_quantize_parser = _keeping_host_abbreviations(build)


def _keeping_host_abbreviations(build: Callable[..., Any]) -> Callable[..., Any]:
    """AutoRound's ``build_quantize_parser``, whose parsers expand option
    abbreviations as without the plugin (:func:`host_abbreviations`)."""

    def build_quantize_parser(*args: Any, **kwargs: Any) -> Any:
        parser = build(*args, **kwargs)
        parse_known_args = parser.parse_known_args

        def parse(args: Any = None, namespace: Any = None) -> Any:
            argv = list(sys.argv[1:] if args is None else args)
            return parse_known_args(host_abbreviations(parser, argv), namespace)

        parser.parse_known_args = parse
        return parser

    build_quantize_parser._vsraq = True  # type: ignore[attr-defined]
    build_quantize_parser.__wrapped__ = build  # type: ignore[attr-defined]
    return build_quantize_parser


def _is_plugin_flag(option: str) -> bool:
    return option.startswith("--vsraq_") or option == "--loss"


def host_abbreviations(parser: Any, argv: list[str]) -> list[str]:
    """``argv`` with each abbreviated option expanded the way AutoRound's parser
    would expand it without the plugin: the ``--vsraq_*`` and ``--loss`` flags
    must not make a host abbreviation ambiguous (``--v`` is ``--vllm_args``)."""
    options = [o for action in parser._actions for o in action.option_strings]
    host = [o for o in options if o.startswith("--") and not _is_plugin_flag(o)]
    out = []
    for arg in argv:
        if arg == "--":
            out.extend(argv[len(out) :])
            break
        flag, eq, value = arg.partition("=")
        if flag.startswith("--") and flag not in options:
            matches = [o for o in host if o.startswith(flag)]
            ours = [o for o in options if _is_plugin_flag(o) and o.startswith(flag)]
            if len(matches) == 1 and ours:
                arg = matches[0] + eq + value
        out.append(arg)
    return out
