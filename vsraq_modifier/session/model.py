"""``ModelRouting``: the MoE routers and decoder layers of the model a run tunes,
and the :class:`BlockSession` of each of its layers.

One router-finding place for both hosts (AutoRound tunes the model it was given;
llm-compressor hands AutoRound a one-layer wrapper, so the routers come from
llm-compressor's full model). Host-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger
from torch import nn

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.lookahead import attention_module, next_router_path
from vsraq_modifier.masks import lookahead_kwargs
from vsraq_modifier.memory import RoutingMemory, guard_routing_memory
from vsraq_modifier.objective import BlockObjective
from vsraq_modifier.objective.combine import world_size
from vsraq_modifier.refit import RefitOptions, resolved_target
from vsraq_modifier.routers import UnsupportedModelError, find_routers
from vsraq_modifier.routers.base import RouterSite, decoder_layers, text_config
from vsraq_modifier.session.block import BlockSession

__all__ = ["ModelRouting"]


class ModelRouting:
    """Routers (``sites``) and decoder layers of ``model`` for a run with
    ``config``. A model without MoE router is an error for a routing loss; with
    ``loss=mse`` it gives an empty routing (the host runs unchanged)."""

    def __init__(self, model: nn.Module, config: VSRAQConfig) -> None:
        self.model = model
        self.config = config
        self.sites: list[RouterSite] = []
        self.layers: list[nn.Module] = []
        self.layer_names: dict[int, str] = {}
        self._refit_off_logged = False
        try:
            self.sites = find_routers(model)
        except UnsupportedModelError:
            if config.is_routing_loss:
                raise
            return
        self.layers = list(decoder_layers(model))
        ids = {id(m) for m in self.layers}
        self.layer_names = {id(m): n for n, m in model.named_modules() if id(m) in ids}
        if config.refit_method != "none":
            self._check_refit_target()

    def _check_refit_target(self) -> None:
        """Refuse a re-fit target that does not suit a router before any block is
        tuned (the re-fit itself would only find out after the first block)."""
        for site in self.sites:
            try:
                resolved_target(site.spec, self.config.router_refit_target)
            except ValueError as err:
                raise ValueError(
                    f"router_refit_target: {err} (the router of decoder layer "
                    f"{site.layer}, {site.name})"
                ) from None

    def describe(self) -> str:
        ahead = "on" if self.config.lookahead else "off"
        return (
            f"vsraq: loss={self.config.loss}, options {self.config.model_dump()}; "
            f"MoE routers at layers {[s.layer for s in self.sites]}; look-ahead {ahead}"
        )

    def index_of(self, block: nn.Module) -> int | None:
        """Decoder layer index of ``block`` (None: not a decoder layer)."""
        for i, layer in enumerate(self.layers):
            if layer is block:
                return i
        return None

    def name_of(self, layer: nn.Module) -> str:
        return self.layer_names[id(layer)]

    def needs_session(self, index: int) -> bool:
        """Whether decoder layer ``index`` has a router, or (look-ahead on) one
        after it: then its tuning must go through a :class:`BlockSession`."""
        own = any(s.layer == index for s in self.sites)
        ahead = self.config.lookahead and any(s.layer > index for s in self.sites)
        return own or ahead

    def open_block(
        self,
        index: int,
        block: nn.Module,
        *,
        objective: BlockObjective | None,
        mask_layer: int,
        param_name: Callable[[str], str] | None = None,
    ) -> BlockSession | None:
        """The session of decoder layer ``index`` (``block``), or None when it has
        no router and no look-ahead router. ``mask_layer``: the decoder layer
        whose attention-mask type the host's layer kwargs carry (look-ahead
        layers of another type get their own mask)."""
        own = [s for s in self.sites if s.layer == index]
        path = None
        if self.config.lookahead:
            path = next_router_path(self.layers, self.sites, index)
        if not own and path is None:
            return None
        if path is not None:
            path.kwargs_for = lookahead_kwargs(
                text_config(self.model.config), mask_layer
            )
            if (
                self.config.lookahead_attention == "reference"
                and objective is not None
                and not path.attention_layers
            ):
                logger.info(
                    f"vsraq layer {index}: the look-ahead path to layer "
                    f"{path.site.layer} has no attention (self_attn) to freeze; "
                    "it runs whole (lookahead_attention: reference)"
                )
        return BlockSession(
            index,
            block,
            own,
            path,
            objective=objective,
            loss=self.config.loss,
            lookahead_every=self.config.lookahead_every,
            lookahead_attention=self.config.lookahead_attention,
            best_on_host=self.config.best_iteration == "host",
            max_flip_share=self.config.max_flip_share,
            param_name=param_name,
            refit=self.refit_options(),
        )

    def refit_options(self) -> RefitOptions | None:
        """The router re-fit of this run (None: off). Not under torch.distributed
        with several processes: each rank would fit the routers on its own
        calibration shard, and the ranks' routers would differ."""
        if self.config.refit_method == "none":
            return None
        if world_size() > 1:
            if self.config.router_refit == "ridge":
                raise ValueError(
                    "router_refit='ridge' runs in one process only: under torchrun "
                    "each rank would re-fit the routers on its own calibration "
                    "shard and the ranks' routers would differ. Run in one "
                    "process, or re-fit the saved checkpoint with `vsraq refit`"
                )
            if not self._refit_off_logged:
                logger.info(
                    "vsraq: router re-fit off (router_refit: auto): it runs in one "
                    "process only; `vsraq refit` re-fits a saved checkpoint"
                )
                self._refit_off_logged = True
            return None
        return RefitOptions(
            method="ridge",
            ridge=self.config.router_refit_ridge,
            accept_se=self.config.router_refit_accept_se,
            target=self.config.router_refit_target,
        )

    def guard_memory(
        self,
        *,
        device: Any,
        tokens: int,
        batch_tokens: int,
        activation_bytes: int,
    ) -> RoutingMemory | None:
        """Estimate, log and check the memory the routing objective needs
        (:mod:`vsraq_modifier.memory`); None when the model has no router."""
        if not self.sites:
            return None
        return guard_routing_memory(
            self.sites,
            device=device,
            num_layers=len(self.layers),
            config=text_config(self.model.config),
            tokens=tokens,
            batch_tokens=batch_tokens,
            lookahead=self.config.lookahead,
            routing_loss=self.config.is_routing_loss,
            activation_bytes=activation_bytes,
            frozen_attention=[
                i
                for i, layer in enumerate(self.layers)
                if attention_module(layer) is not None
            ]
            if self.config.lookahead_attention == "reference"
            else None,
        )

    @staticmethod
    def warn_no_router() -> None:
        logger.warning("vsraq: no MoE router found; loss=mse runs plain AutoRound")
