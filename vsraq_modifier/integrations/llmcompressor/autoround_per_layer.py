"""The AutoRound-side VSRAQ quantizer, adapted to llm-compressor's calls.

llm-compressor's ``AutoRoundModifier`` builds a fresh ``AutoRound`` per decoder
layer around a wrapper model that holds only that layer, and calls
``AutoRound.quantize_block``. The loss plumbing is the AutoRound integration's
(:class:`~vsraq_modifier.integrations.autoround.quantizer.VSRAQQuantizer`, one
``BlockSession`` per layer); this subclass only changes what differs there:

- routers, layer indices and the look-ahead path come from the full model
  (AutoRound's own model is the one-layer wrapper, which has no next router);
- no device moves for the look-ahead layers: llm-compressor's offloading onloads
  each module when it runs, and moving them would fight it; each look-ahead layer
  gets the attention mask of its own type (``masks.lookahead_kwargs``);
- the tuning loop runs each linearized expert on its routed tokens only
  (``seams.routed_experts_only``: same loss and gradients, k/E of the cost).
"""

from __future__ import annotations

from typing import Any

from auto_round.algorithms.registry import register_pipeline_member
from loguru import logger
from torch import nn

from vsraq_modifier.integrations.autoround.quantizer import (
    VSRAQQuantizer,
    VSRAQSignRoundConfig,
)
from vsraq_modifier.integrations.llmcompressor.seams import (
    cpu_ddp_wrapping,
    routed_experts_only,
)
from vsraq_modifier.session import BlockSession, ModelRouting

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
        self.host = HostModel(host_model)
        super().__init__(**kwargs)


@register_pipeline_member(LLMCompressorVSRAQSignRoundConfig)
class LLMCompressorVSRAQQuantizer(VSRAQQuantizer):
    """:class:`VSRAQQuantizer` for one layer of llm-compressor's model."""

    def _routing_model(self) -> nn.Module:
        return self.config.host.model

    def _find_routing(self) -> ModelRouting:
        routing = ModelRouting(self._routing_model(), self.vsraq)
        logger.debug(
            f"vsraq: MoE routers at layers {[s.layer for s in routing.sites]} of the "
            "llm-compressor model"
        )
        return routing

    def _check_run(self) -> None:
        """AutoRound's calibration settings are placeholders here; the modifier
        checks data and memory on the captured calls (calibration_checks.py)."""

    def _mask_layer(self, index: int) -> int:
        return index  # each layer is tuned on its own captured calls

    def _prepare_lookahead(self, session: BlockSession, block: nn.Module) -> None:
        """No device moves (llm-compressor onloads the look-ahead layers itself)."""

    def _release_lookahead(self, session: BlockSession) -> None:
        """Nothing to do (see :meth:`_prepare_lookahead`)."""

    def quantize_block(self, *args: Any, **kwargs: Any) -> dict:
        with routed_experts_only(), cpu_ddp_wrapping():
            return super().quantize_block(*args, **kwargs)
