"""The AutoRound-side VSRAQ quantizer, adapted to llm-compressor's calls.

llm-compressor's ``AutoRoundModifier`` builds a fresh ``AutoRound`` per decoder
layer around a wrapper model that holds only that layer, and calls
``AutoRound.quantize_block``. The loss plumbing is the AutoRound integration's
(:class:`~vsraq_modifier.integrations.autoround.quantizer.VSRAQQuantizer`: taps on
the reference and tuning forwards, ``BlockObjective`` added in ``_get_loss``);
this subclass only changes what differs in that setting:

- routers, layer indices and the look-ahead path come from the full model
  (AutoRound's own model is the one-layer wrapper, which has no next router);
- no device moves for the look-ahead layers: llm-compressor's offloading onloads
  each module when it runs, and moving them would fight it; each look-ahead layer
  gets the attention mask of its own type (``masks.lookahead_kwargs``);
- the tuning loop runs each linearized expert on its routed tokens only
  (``experts.routed_experts_only``: same loss and gradients, k/E of the cost).
"""

from __future__ import annotations

from typing import Any

from auto_round.algorithms.registry import register_pipeline_member
from loguru import logger
from torch import nn

from vsraq_modifier.integrations.autoround.config import VSRAQSignRoundConfig
from vsraq_modifier.integrations.autoround.quantizer import VSRAQQuantizer
from vsraq_modifier.integrations.llmcompressor.experts import routed_experts_only
from vsraq_modifier.integrations.llmcompressor.masks import lookahead_kwargs
from vsraq_modifier.lookahead import LookaheadPath
from vsraq_modifier.routers import UnsupportedModelError, find_routers
from vsraq_modifier.routers.base import decoder_layers

__all__ = [
    "HostModel",
    "LLMCompressorVSRAQQuantizer",
    "LLMCompressorVSRAQSignRoundConfig",
]


class HostModel:
    """A reference to llm-compressor's full model that copies never duplicate."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __copy__(self) -> HostModel:
        return self

    def __deepcopy__(self, memo: dict) -> HostModel:
        return self


class LLMCompressorVSRAQSignRoundConfig(VSRAQSignRoundConfig):
    """:class:`VSRAQSignRoundConfig` plus the full model it is tuning a layer of.

    (The class name keeps "SignRound": AutoRound forwards ``iters``/``lr`` given
    to ``AutoRound(...)`` only to configs whose name contains it.)
    """

    def __init__(self, *, host_model: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = HostModel(host_model)


@register_pipeline_member(LLMCompressorVSRAQSignRoundConfig)
class LLMCompressorVSRAQQuantizer(VSRAQQuantizer):
    """:class:`VSRAQQuantizer` for one layer of llm-compressor's model."""

    def _find_routers(self) -> None:
        model = self.config.host.model
        try:
            self._sites = find_routers(model)
        except UnsupportedModelError:
            if self.vsraq.is_routing_loss:
                raise
            self._sites = []
            return
        self._layers = list(decoder_layers(model))
        ids = {id(m) for m in self._layers}
        self._layer_names = {id(m): n for n, m in model.named_modules() if id(m) in ids}
        logger.debug(
            f"vsraq: MoE routers at layers {[s.layer for s in self._sites]} of the "
            "llm-compressor model"
        )

    def _prepare_lookahead(self, path: LookaheadPath | None, block: nn.Module) -> None:
        """No device moves (llm-compressor onloads the look-ahead layers itself);
        per-layer attention masks."""
        if path is not None:
            config = self.config.host.model.config
            path.kwargs_for = lookahead_kwargs(config, path.first_layer - 1)

    def _release_lookahead(self, run: Any) -> None:
        """Nothing to do (see :meth:`_prepare_lookahead`)."""

    def quantize_block(self, *args: Any, **kwargs: Any) -> dict:
        with routed_experts_only():
            return super().quantize_block(*args, **kwargs)
