"""Every place where vsraq-modifier touches llm-compressor's internals
(llmcompressor 0.14.0.1).

The only file that names a private llm-compressor attribute or replaces a host
object; the modifier and the per-layer quantizer call these named functions.
tests/unit/integrations/llmcompressor/test_seams.py checks, seam by seam, that
llm-compressor still offers what each one uses (by signature or attribute).
docs/architecture.md lists the seams and why each is needed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

__all__ = [
    "arguments_seam",
    "captured_calls",
    "cpu_ddp_wrapping",
    "decoding_layers",
    "experts_without_activation_child",
    "register_lazy_modifier",
    "replace_captured_calls",
    "routed_experts_only",
]


# --- registration ---------------------------------------------------------------
def register_lazy_modifier(factory: Any, name: str, create: Callable[..., Any]) -> None:
    """Make recipes find ``name`` before its class can be imported: at the time
    ``llmcompressor.modifiers.factory`` has run, ``llmcompressor.modifiers`` is
    half-initialised. ``ModifierFactory.register`` insists on a Modifier class;
    ``ModifierFactory.create`` only calls the entry, so a function placed in its
    private registry is enough (replaced by the class once it is imported)."""
    factory._registered_registry.setdefault(name, create)


# --- the modifier's per-layer state ---------------------------------------------
def decoding_layers(modifier: Any, modules: Any) -> list[nn.Module]:
    """The decoder layers among ``modules``, as AutoRoundModifier recognises
    them."""
    return [m for m in modules or [] if modifier._is_decoding_layer(m)]


def captured_calls(modifier: Any, layer: nn.Module) -> list | None:
    """The calibration calls ((args, kwargs) per batch) AutoRoundModifier
    captured for ``layer``, or None."""
    return modifier._all_module_input.get(layer._tmp_name)


def replace_captured_calls(modifier: Any, layer: nn.Module, calls: list) -> None:
    """Make AutoRoundModifier tune ``layer`` on ``calls`` instead."""
    modifier._all_module_input[layer._tmp_name] = calls


@functools.cache
def arguments_seam() -> type:
    """``AutoRoundModifier`` with its private ``_update_device_map_for_dp``
    overridden: the last hook before ``apply_autoround`` builds
    ``AutoRound(**ar_kwargs)``, the only place to adapt those arguments. A
    subclass implements ``adapt_autoround_kwargs(ar_kwargs)``.

    Built on first use: this module is also imported while
    ``llmcompressor.modifiers`` is still initialising (registration)."""
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    class ArgumentsSeam(AutoRoundModifier):
        def adapt_autoround_kwargs(self, ar_kwargs: dict[str, Any]) -> None:
            """Change AutoRound's arguments in place (default: nothing)."""

        def _update_device_map_for_dp(self, ar_kwargs: dict[str, Any]) -> None:
            super()._update_device_map_for_dp(ar_kwargs)
            self.adapt_autoround_kwargs(ar_kwargs)

    return ArgumentsSeam


# --- linearized experts ---------------------------------------------------------
def _linear_experts(layer: nn.Module) -> list[nn.Module]:
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D

    return [m for m in layer.modules() if isinstance(m, LinearExperts2D)]


@contextlib.contextmanager
def experts_without_activation_child(layer: nn.Module) -> Iterator[int]:
    """Detach the ``act_fn`` child of every linearized experts list in ``layer``
    (yields how many were detached); restored on exit, in the same position.

    ``LinearExperts2D`` is a ``ModuleList`` of experts that also holds the
    activation as a child; AutoRound iterates the experts of an MoE block to fill
    in activation maxima (NVFP4, static activation schemes), gets ``None`` for
    that child and crashes ("'NoneType' object has no attribute 'act_max'"). The
    experts' forward does not use it (each expert holds its own reference)."""
    detached: list[tuple[nn.Module, nn.Module]] = []
    for experts in _linear_experts(layer):
        act = experts._modules.get("act_fn")
        if act is None:
            continue
        del experts._modules["act_fn"]
        object.__setattr__(experts, "act_fn", act)  # plain attribute meanwhile
        detached.append((experts, act))
    try:
        yield len(detached)
    finally:
        for experts, act in detached:
            experts.__dict__.pop("act_fn", None)
            experts._modules["act_fn"] = act


@contextlib.contextmanager
def routed_experts_only() -> Iterator[None]:
    """Run linearized experts on their routed tokens only while a layer is tuned.

    ``oneshot(moe_calibrate_all_experts=True)`` (the default) runs every expert
    on every token and keeps the routed tokens' outputs: same block output,
    routing and gradients, E/k times the expert compute. llm-compressor has no
    public switch for it (its ``moe_calibration_context`` sets a private module
    flag); the previous setting is restored."""
    from llmcompressor.modeling.moe import context

    previous = context._CALIBRATE_ALL_EXPERTS
    context._CALIBRATE_ALL_EXPERTS = False
    try:
        yield
    finally:
        context._CALIBRATE_ALL_EXPERTS = previous


# --- several processes (torchrun) -------------------------------------------------
@contextlib.contextmanager
def cpu_ddp_wrapping() -> Iterator[None]:
    """Let AutoRound's data-parallel block wrapping run on CPU ranks.

    Under ``torch.distributed`` AutoRound wraps the tuned block in
    ``DistributedDataParallel(block, device_ids=device_list)``; on CPU its device
    list is ``["cpu"]``, which DDP refuses (CPU modules take ``device_ids=None``),
    so plain ``AutoRoundModifier`` under ``torchrun`` on CPU fails in the first
    layer. While a layer is tuned, a CPU-only device list is wrapped with
    ``device_ids=None`` (gloo all-reduces the gradients); accelerator lists are
    left to AutoRound."""
    from auto_round.algorithms.quantization.sign_round import quantizer as host

    original = host.setup_ddp_if_needed_

    def setup(ar: Any, block: nn.Module, device_list: Any) -> Any:
        import torch.distributed as dist

        cpu_only = [str(d) for d in device_list or []] == ["cpu"]
        if not (cpu_only and dist.is_available() and dist.is_initialized()):
            return original(ar, block, device_list)
        from torch.nn.parallel import DistributedDataParallel

        block = DistributedDataParallel(block, find_unused_parameters=True)
        return block, lambda: None

    host.setup_ddp_if_needed_ = setup
    try:
        yield
    finally:
        host.setup_ddp_if_needed_ = original
