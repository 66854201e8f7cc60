"""The router adapter contract: where a family's MoE routers live and which
:class:`~vsraq_modifier.routing.RouterSpec` describes each of them.

An adapter knows nothing about quantization; it only finds routers (in the stock
transformers modules and in the hosts' rewritten MoE blocks) and describes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vsraq_modifier.routing import RouterSpec

__all__ = ["RouterAdapter", "RouterSite", "UnrecognisedRouterOutputError"]


class UnrecognisedRouterOutputError(TypeError):
    """The router's forward returned something the adapter cannot read logits from."""


@dataclass(frozen=True, eq=False)
class RouterSite:
    """One MoE router in a model.

    ``layer`` is the decoder layer index (``model.layers[layer]``), ``name`` the
    router's module path relative to that decoder layer (e.g. ``mlp.gate``),
    ``router`` the module whose forward gives the logits, ``block`` the MoE block.
    """

    layer: int
    name: str
    router: nn.Module
    block: nn.Module
    spec: RouterSpec
    adapter: RouterAdapter

    def logits(self, output: Any) -> torch.Tensor:
        """Router logits [T, E] from the router module's forward output."""
        return self.adapter.logits_from_output(output, self.spec)


class RouterAdapter:
    """Base class of one family's adapter; subclasses set the class attributes and
    implement :meth:`spec_for`. Register with ``@register_adapter``."""

    #: short family name, e.g. "qwen3_moe"
    family: ClassVar[str]
    #: ``config.model_type`` values handled by this adapter
    model_types: ClassVar[tuple[str, ...]]
    #: attribute of a decoder layer holding the MoE block (tried in order)
    block_attrs: ClassVar[tuple[str, ...]] = ("mlp",)
    #: attribute of the MoE block holding the router
    router_attr: ClassVar[str] = "gate"

    def spec_for(self, config: Any, router: nn.Module, block: nn.Module) -> RouterSpec:
        """The routing rule of one router, from the model config and the modules."""
        raise NotImplementedError

    # --- finding routers -------------------------------------------------------
    def router_in_layer(
        self, layer: nn.Module
    ) -> tuple[str, nn.Module, nn.Module] | None:
        """(name, router, block) of the MoE router in one decoder layer, or None
        for a dense layer."""
        for attr in self.block_attrs:
            block = getattr(layer, attr, None)
            if block is None:
                continue
            router = getattr(block, self.router_attr, None)
            if isinstance(router, nn.Module) and self.is_router(router):
                return f"{attr}.{self.router_attr}", router, block
        return None

    def is_router(self, module: nn.Module) -> bool:
        """A router is a module with a 2-D ``weight`` of shape [E, hidden]
        (stock transformers routers and the hosts' plain nn.Linear gates)."""
        w = getattr(module, "weight", None)
        return isinstance(w, torch.Tensor) and w.dim() == 2

    def find_routers(self, model: nn.Module) -> list[RouterSite]:
        """Every MoE router of ``model``, in layer order."""
        config = model.config
        sites = []
        for i, layer in enumerate(decoder_layers(model)):
            found = self.router_in_layer(layer)
            if found is None:
                continue
            name, router, block = found
            spec = self.spec_for(config, router, block)
            sites.append(RouterSite(i, name, router, block, spec, self))
        return sites

    def logits_from_output(self, output: Any, spec: RouterSpec) -> torch.Tensor:
        """Stock routers return (logits, weights, indices); the hosts' nn.Linear
        gates return the logits alone."""
        if isinstance(output, tuple) and output:
            output = output[0]
        if not isinstance(output, torch.Tensor) or output.shape[-1] != spec.num_experts:
            shape = getattr(output, "shape", type(output).__name__)
            raise UnrecognisedRouterOutputError(
                f"{type(self).__name__}: router output {shape} is not logits with "
                f"{spec.num_experts} experts in the last dimension; the model's "
                "router changed shape or was replaced. Update the adapter "
                f"vsraq_modifier/routers/{self.family}.py."
            )
        return output.reshape(-1, spec.num_experts)


def text_config(config: Any) -> Any:
    """The text sub-config of multimodal configs, else the config itself."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list (``model.model.layers``, ``model.backbone.layers``
    or ``model.layers``)."""
    for path in (
        "model.layers",
        "backbone.layers",
        "layers",
        "model.language_model.layers",
    ):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(
        f"{type(model).__name__}: no decoder layer list found (looked for "
        "model.layers, backbone.layers, layers)"
    )
