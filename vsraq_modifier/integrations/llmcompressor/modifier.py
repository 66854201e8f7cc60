"""``VSRAQModifier``: llm-compressor's AutoRound modifier plus the routing objective.

The loss plumbing is the AutoRound integration's (one objective, two hosts):
each decoder layer is tuned by ``AutoRound`` exactly as ``AutoRoundModifier``
does, with ``alg_configs`` set to the VSRAQ SignRound config, so the routing
terms are added to AutoRound's block loss by the same quantizer code. What this
module adds is what the llm-compressor host gets wrong or lacks for that (see
docs/llm-compressor.md): the full-precision reference chain, the look-ahead
through the full model, linearized-expert quirks, and layer dtypes.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from llmcompressor.core import Event, State
from llmcompressor.modifiers.utils.hooks import HooksMixin
from loguru import logger
from pydantic import PrivateAttr, ValidationError, model_validator
from torch import nn

from vsraq_modifier.config import LossName, VSRAQConfig
from vsraq_modifier.integrations.autoround.config import vsraq_config
from vsraq_modifier.integrations.autoround.host_options import check_host_options
from vsraq_modifier.integrations.llmcompressor import seams
from vsraq_modifier.integrations.llmcompressor.autoround_per_layer import (
    LLMCompressorVSRAQSignRoundConfig,
)
from vsraq_modifier.integrations.llmcompressor.calibration_checks import (
    check_calibration_data,
    check_first_layer,
    check_token_ids,
)
from vsraq_modifier.integrations.llmcompressor.fp_chain import FullPrecisionChain
from vsraq_modifier.integrations.llmcompressor.register import register
from vsraq_modifier.routers import find_routers

__all__ = ["VSRAQ_FIELDS", "VSRAQModifier"]


def same_on_every_rank(layer: nn.Module) -> None:
    """Under ``torchrun``, give every rank rank 0's tuned layer.

    AutoRound averages the gradients over the ranks (DDP) but picks each layer's
    best iteration from the rank's own loss, with no all-reduce, so ranks may end
    with different weights, and each would then feed the next layer its own.
    Broadcasting rank 0's result (weights, scales, re-fitted routers: the layer's
    whole state) once per layer makes them one model, at the cost of one layer's
    tensors over the wire. No-op in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in layer.state_dict(keep_vars=True).values():
            data = tensor.data
            buffer = data.contiguous()
            dist.broadcast(buffer, src=0)
            if buffer.data_ptr() != data.data_ptr():
                data.copy_(buffer)


#: the VSRAQ option names, in declaration order (docs/objective.md)
VSRAQ_FIELDS: tuple[str, ...] = tuple(VSRAQConfig.model_fields)


def _option(name: str) -> Any:
    """VSRAQConfig's field ``name`` (default, constraints, description), so a
    recipe value out of range fails when the recipe is parsed, naming the field;
    tests/unit/integrations/llmcompressor/test_modifier.py checks the modifier's
    fields equal VSRAQConfig's."""
    return copy.copy(VSRAQConfig.model_fields[name])


class VSRAQModifier(seams.arguments_seam()):
    """AutoRound (SignSGD rounding, block-wise loss) plus VSRAQ's routing-aware
    objective, so that an MoE model keeps its expert choices when quantized.

    Takes every ``AutoRoundModifier`` field (``targets``, ``scheme``, ``ignore``,
    ``config_groups``, ``iters``, ``batch_size``, ``lr``, ...) and the VSRAQ
    options ``loss``, ``value_weight``, ``structure_weight``, ``margin``,
    ``value_target``, ``structure``, ``temperature``, ``lookahead`` (meaning and
    defaults: :class:`~vsraq_modifier.config.VSRAQConfig`). Routers and lm_head
    must stay unquantized: list them in ``ignore`` (recipes/ does).

    Sample yaml:

    ```yaml
    quant_stage:
      quant_modifiers:
        VSRAQModifier:
          targets: [Linear]
          scheme: W4A16
          ignore: [lm_head, "re:.*mlp.gate$"]
          iters: 200
          enable_torch_compile: false
          loss: vsraq
          value_weight: 1.0
          structure_weight: 0.25
          lookahead: true
    ```

    Lifecycle:

    - on_initialize
        - AutoRoundModifier's (apply the scheme), check the model has MoE routers
    - on_calibration_start
        - AutoRoundModifier's (input capture hooks), reset the full-precision chain
    - on_sequential_epoch_end
        - feed the layer full-precision inputs, compute its full-precision outputs
        - AutoRound with the VSRAQ quantizer on the layer (llm-compressor hooks
          off, so look-ahead forwards are not captured as calibration inputs)
    - on_calibration_end
        - AutoRoundModifier's (freeze quantization, remove hooks)
    """

    # the VSRAQ options (meaning and defaults: VSRAQConfig)
    loss: LossName = _option("loss")
    value_weight: float = _option("value_weight")
    structure_weight: float = _option("structure_weight")
    margin: float = _option("margin")
    value_target: Literal["logits", "scores", "both"] = _option("value_target")
    structure: Literal["margin", "set_nll"] = _option("structure")
    temperature: float | None = _option("temperature")
    lookahead: bool = _option("lookahead")
    lookahead_every: int = _option("lookahead_every")
    lookahead_attention: Literal["full", "reference"] = _option("lookahead_attention")
    best_iteration: Literal["host", "total"] = _option("best_iteration")
    max_flip_share: float | None = _option("max_flip_share")
    router_refit: Literal["auto", "none", "ridge"] = _option("router_refit")
    router_refit_ridge: float = _option("router_refit_ridge")
    router_refit_accept_se: float = _option("router_refit_accept_se")
    router_refit_target: Literal["auto", "logits", "centred", "sigmoid"] = _option(
        "router_refit_target"
    )

    #: off here (AutoRoundModifier's default is on): the router hooks need eager
    #: blocks, and a saved recipe.yaml then reloads without the conflict
    enable_torch_compile: bool = False

    _vsraq: VSRAQConfig = PrivateAttr(default=None)
    _model: nn.Module | None = PrivateAttr(default=None)
    _layer: nn.Module | None = PrivateAttr(default=None)
    _layers: list[nn.Module] = PrivateAttr(default_factory=list)
    _fp_chain: FullPrecisionChain = PrivateAttr(default_factory=FullPrecisionChain)

    @model_validator(mode="after")
    def _check_vsraq(self) -> VSRAQModifier:
        # one config for the run, from the options the recipe set to something
        # other than their default (a saved recipe.yaml lists every field)
        defaults = VSRAQConfig.model_fields
        given = {
            n: getattr(self, n)
            for n in VSRAQ_FIELDS
            if n in self.model_fields_set and getattr(self, n) != defaults[n].default
        }
        try:
            self._vsraq = vsraq_config(**given)
            check_host_options(self._vsraq, self._host_options())
        except (ValidationError, ValueError) as e:
            raise ValueError(f"VSRAQModifier: {e}") from None
        return self

    def _host_options(self) -> dict[str, Any]:
        """The AutoRound options of the recipe the conflict rules read."""
        names = ("iters", "enable_torch_compile")
        return {n: getattr(self, n) for n in names if n in self.model_fields_set}

    @property
    def vsraq(self) -> VSRAQConfig:
        """The VSRAQ options as one validated config."""
        return self._vsraq

    # --- lifecycle -------------------------------------------------------------
    def on_initialize(self, state: State, **kwargs: Any) -> bool:
        check_calibration_data(state.data.calib)  # empty or all padding
        vocab = getattr(state.model.config.get_text_config(), "vocab_size", None)
        check_token_ids(state.data.calib, vocab)  # ids beyond the vocabulary
        if self.vsraq.is_routing_loss:
            find_routers(state.model)  # a clear error now, not after layer 0
        self._model = state.model
        done = super().on_initialize(state, **kwargs)
        self._vsraq = refit_config(state.model, self._vsraq)
        return done

    def on_calibration_start(self, state: State, event: Event, **kwargs: Any) -> None:
        super().on_calibration_start(state, event, **kwargs)
        self._layers = seams.decoding_layers(self, state.model.modules())
        self._fp_chain.reset()

    def on_sequential_epoch_end(
        self, state: State, event: Event, modules: list[nn.Module], **kwargs: Any
    ) -> None:
        layers = seams.decoding_layers(self, modules)
        if len(layers) != 1:  # AutoRoundModifier's own check / no-op
            return super().on_sequential_epoch_end(state, event, modules, **kwargs)
        layer = self._layer = layers[0]
        calls = seams.captured_calls(self, layer)
        check_first_layer(
            state.model, layer, calls, vsraq=self.vsraq, batch_size=self.batch_size
        )  # routing memory: logged, refused over VSRAQ_MEMORY_LIMIT_GB
        if calls:
            seams.replace_captured_calls(
                self,
                layer,
                self._fp_chain.feed(self._layers, layer, calls, state.model.config),
            )
        try:
            with (
                seams.experts_without_activation_child(layer),
                HooksMixin.disable_hooks(),
            ):
                super().on_sequential_epoch_end(state, event, modules, **kwargs)
            same_on_every_rank(layer)
        finally:
            self._layer = None

    def on_calibration_end(self, state: State, event: Event, **kwargs: Any) -> None:
        super().on_calibration_end(state, event, **kwargs)
        self._fp_chain.reset()

    def on_finalize(self, state: State, **kwargs: Any) -> bool:
        self._model, self._layers = None, []
        return super().on_finalize(state, **kwargs)

    # --- the AutoRound call (seams.arguments_seam) --------------------------------
    def adapt_autoround_kwargs(self, ar_kwargs: dict[str, Any]) -> None:
        """What VSRAQ changes in AutoRoundModifier's ``AutoRound(...)`` call:
        the VSRAQ quantizer's config, and AutoRound's amp off for float32 layers.

        AutoRound casts the tuned layer to its amp dtype (bfloat16 on a CPU,
        whatever the model's dtype) and leaves it so; the pipeline then runs the
        next layer on mixed dtypes.
        """
        if self._layer is not None:
            ar_kwargs["amp"] = next(self._layer.parameters()).dtype != torch.float32
        if self.iters == 0:
            return  # round-to-nearest: AutoRound's own path (loss=mse only)
        ar_kwargs.pop("disable_opt_rtn", None)  # an RTN option; SignRound has none
        ar_kwargs["alg_configs"] = LLMCompressorVSRAQSignRoundConfig(
            host_model=self._model,
            vsraq=self.vsraq,
            iters=ar_kwargs.pop("iters", self.iters),
            lr=ar_kwargs.pop("lr", self.lr),
        )


def _quantized_routers(model: nn.Module) -> list[str]:
    """The routers the recipe quantizes (names): a quantized router cannot be
    re-fitted in full precision (its re-fitted weights would be rounded again)."""
    names = {id(m): n for n, m in model.named_modules()}
    try:
        sites = find_routers(model)
    except ValueError:
        return []  # loss=mse on a model without routers
    return [
        names.get(id(site.router), site.name)
        for site in sites
        if getattr(site.router, "quantization_scheme", None) is not None
    ]


def refit_config(model: nn.Module, config: VSRAQConfig) -> VSRAQConfig:
    """The run's config once the recipe's quantized modules are known: a re-fit
    the user asked for (``ridge``) with a quantized router is an error naming the
    ignore pattern; the default (``auto``) is switched off there, with a log line."""
    quantized = _quantized_routers(model) if config.refit_method != "none" else []
    if not quantized:
        return config
    name = quantized[0]
    if config.router_refit == "ridge":
        tail = ".".join(name.split(".")[-2:]).replace(".", r"\.")
        raise ValueError(
            f"VSRAQModifier: router_refit needs full-precision routers, but the "
            f"recipe quantizes {name}. Add 're:.*{tail}$' to ignore (or set "
            "router_refit: none)."
        )
    logger.info(
        f"vsraq: router re-fit off (router_refit: auto): the recipe quantizes the "
        f"routers ({name}, ...); ignore them to re-fit, or set router_refit: none "
        "to silence this line"
    )
    return config.model_copy(update={"router_refit": "none"})


register(VSRAQModifier)
