"""``VSRAQQuantizer``: AutoRound's SignRound tuning plus the routing objective.

The block's VSRAQ life is a :class:`~vsraq_modifier.session.BlockSession`; this
class only calls it at AutoRound's points (``algorithms/composer.py``,
``sign_round/quantizer.py``; private ones through ``seams.py``):

1. ``register_fp_input_forward_hooks``: right before AutoRound's full-precision
   reference forward of a block -> ``session.capture_reference()``;
2. ``quantize_block``: ``session.start(...)``, AutoRound's tuning, then
   ``session.finish()`` (one log line per block);
3. the block wrapped for tuning (seam ``wrap_block_hook``) ->
   ``session.begin_tuning()``;
4. each step's loss (seam ``LossSeam``) -> ``session.step_loss(...)``.

Registered for :class:`VSRAQSignRoundConfig` here (and the algorithm alias
``"vsraq"``), so importing this module is what makes AutoRound run it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from auto_round.algorithms.registry import register_algorithm, register_pipeline_member
from loguru import logger
from torch import nn

from vsraq_modifier.integrations.autoround import seams
from vsraq_modifier.integrations.autoround.config import (
    VSRAQOptionError,
    VSRAQSignRoundConfig,
)
from vsraq_modifier.integrations.autoround.host_options import switch_off_messages
from vsraq_modifier.objective import BlockObjective
from vsraq_modifier.objective.combine import mean_over_ranks
from vsraq_modifier.session import BlockReport, BlockSession, ModelRouting

__all__ = ["VSRAQQuantizer", "VSRAQSignRoundConfig", "ensure_registered"]


@register_pipeline_member(VSRAQSignRoundConfig)
class VSRAQQuantizer(seams.LossSeam):
    """SignRound with ``loss = host + BlockObjective(routers)`` per block.

    Forward hooks need an eager block forward, so torch.compile is switched off
    (logged). Under ``torch.distributed`` the objective's normalisers are averaged
    over the ranks (``mean_over_ranks``; a no-op in one process).
    """

    #: what VSRAQSignRoundConfig checks the registry resolves to
    runs_vsraq = True

    def __init__(self, config: VSRAQSignRoundConfig) -> None:
        super().__init__(config)
        self.vsraq = config.vsraq
        routing = self.vsraq.is_routing_loss
        # under torch.distributed (AutoRound's DDP) every rank gets the same
        # normalisers: the start values averaged over the ranks
        self.objective = (
            BlockObjective(self.vsraq, reduce=mean_over_ranks) if routing else None
        )
        if config.host_decision.lfq_off and self.enable_lfq:
            self.enable_lfq = False
            logger.info(switch_off_messages()["lfq"])
        seams.wrap_block_hook(self, self._on_block_wrapped)
        self.reports: list[BlockReport] = []
        self.routing: ModelRouting | None = None
        #: the routing memory estimate of this run (None: not estimated)
        self.memory: Any = None
        self._offload: Any = None
        self._session: BlockSession | None = None
        #: decoder layer whose captured inputs AutoRound replays on every block
        self._inputs_of: int | None = None

    @property
    def session(self) -> BlockSession | None:
        """The block session in progress (None between blocks)."""
        return self._session

    # --- run setup -------------------------------------------------------------
    def can_compile_block_forward(self) -> bool:
        return False

    def bind(self, orchestrator: Any) -> None:
        super().bind(orchestrator)
        self._offload = seams.offloader_of(orchestrator)
        ctx = self.compress_context
        if ctx is not None and getattr(ctx, "enable_torch_compile", False):
            ctx.enable_torch_compile = False
            logger.info(switch_off_messages()["torch_compile"])
        self.routing = self._find_routing()
        self._check_run()

    def _routing_model(self) -> nn.Module:
        """The model whose routers and layers the run tunes."""
        return self.model

    def _find_routing(self) -> ModelRouting:
        routing = ModelRouting(self._routing_model(), self.vsraq)
        if not routing.sites:
            routing.warn_no_router()
        else:
            logger.info(routing.describe())
        return routing

    def _check_run(self) -> None:
        """Calibration data and routing memory, before calibration."""
        from vsraq_modifier.guards import check_calibration_samples

        calib = self.calibration_context
        if calib is None:
            return
        check_calibration_samples(calib.dataset, calib.seqlen)
        tokens = int(calib.nsamples) * int(calib.seqlen)
        batch = min(int(calib.batch_size), int(calib.nsamples))
        self.memory = self.routing.guard_memory(
            device=seams.tuning_device(),
            tokens=tokens,
            batch_tokens=batch * int(calib.seqlen),
            activation_bytes=self._activation_bytes(),
        )

    def _activation_bytes(self) -> int:
        ctx = self.model_context
        dtype = getattr(ctx, "amp_dtype", None) if getattr(ctx, "amp", False) else None
        if not isinstance(dtype, torch.dtype):
            dtype = next(
                (p.dtype for p in self.model.parameters() if p.is_floating_point()),
                torch.float32,
            )
        return torch.empty((), dtype=dtype).element_size()

    # --- 1. reference ----------------------------------------------------------
    def register_fp_input_forward_hooks(self, block: nn.Module) -> list:
        handles = list(super().register_fp_input_forward_hooks(block))
        self._session = None
        routing = self.routing
        if routing is None or not routing.sites:
            return handles
        index = routing.index_of(block)
        if index is None:
            if seams.is_multiblock(block):
                raise VSRAQOptionError(
                    "vsraq tunes one decoder layer at a time; remove nblocks"
                )
            return handles  # not a decoder layer (e.g. a vision tower block)
        if self._inputs_of is None:
            self._inputs_of = index
        session = routing.open_block(
            index,
            block,
            objective=self.objective,
            mask_layer=self._mask_layer(index),
            param_name=seams.tuned_parameter_name,
        )
        if session is None:
            return handles
        self._prepare_lookahead(session, block)
        self._session = session
        return handles + session.capture_reference()

    def _mask_layer(self, index: int) -> int:
        """AutoRound replays the first block's captured inputs on every block:
        their attention mask is of that layer's type."""
        return self._inputs_of or 0

    def _prepare_lookahead(self, session: BlockSession, block: nn.Module) -> None:
        """Bring the look-ahead layers back where AutoRound offloaded them; they
        stay loaded (AutoRound's own reload at their turn is then a no-op)."""
        if session.path is None:
            return
        device = next(block.parameters()).device
        for layer in session.path.layers:
            name = self.routing.name_of(layer)
            seams.restore_lookahead_layer(
                self.model,
                layer,
                name,
                offloader=self._offload,
                amp_dtype=self.model_context.amp_dtype,
                device=device,
            )
            if any(p.is_meta or p.numel() == 0 for p in layer.parameters()):
                raise RuntimeError(
                    f"vsraq: the look-ahead layer {name} has no weights (offloaded "
                    "and not restorable); run with low_cpu_mem_usage=False "
                    "(--disable_low_cpu_mem_usage)"
                )
            layer.to(device)

    def _release_lookahead(self, session: BlockSession) -> None:
        if session.path is not None:
            for layer in session.path.layers:
                seams.release_lookahead_layer(layer)

    # --- 2.-4. tuning ------------------------------------------------------------
    def quantize_block(
        self,
        block: nn.Module,
        fp_inputs: Any,
        input_others: dict,
        fp_outputs: Any,
        q_inputs: Any,
        block_ctx: Any,
        input_ids: Any = None,
        **kwargs: Any,
    ) -> dict:
        session, self._session = self._session, None
        if session is not None:
            session.end_reference()  # AutoRound removes the handles too
        args = (block, fp_inputs, input_others, fp_outputs, q_inputs, block_ctx)
        if session is None or session.layer is not block:
            self._check_unrouted(block)
            return super().quantize_block(*args, input_ids=input_ids, **kwargs)

        active = (
            q_inputs
            if (q_inputs is not None and self.enable_quanted_input)
            else fp_inputs
        )
        nsamples = seams.count_samples(self, active)
        bs = self.calibration_context.batch_size
        session.start(
            nsamples=nsamples,
            inputs=active,
            forward=lambda idx: self.block_forward(
                block, active, input_others, indices=idx
            ),
            calls_per_iter=math.ceil(
                min(nsamples, bs * self.gradient_accumulate_steps) / bs
            ),
            batch_size=self.block_forward.batch_size,
            loss_masks=seams.loss_valid_masks(self, input_ids),
            keeps_best=not self.not_use_best_mse,
        )
        self._session = session
        try:
            best = super().quantize_block(*args, input_ids=input_ids, **kwargs)
            report = session.finish()
        finally:
            session.detach()
            self._session = None
            self._release_lookahead(session)
        self.reports.append(report)
        logger.info(report.line())
        return best

    def _check_unrouted(self, block: nn.Module) -> None:
        """A block tuned without a session: right only if it has no router and
        no router after it."""
        routing = self.routing
        index = routing.index_of(block) if routing and routing.sites else None
        if index is None:
            return
        if routing.needs_session(index):
            raise RuntimeError(
                "vsraq: the full-precision reference forward of this block ran "
                "without the VSRAQ hooks (the host supplied reference outputs, "
                "as llm-compressor's AutoRoundModifier does); use "
                "VSRAQModifier for llm-compressor"
            )
        logger.info(
            f"vsraq layer {index}: no MoE router at or after this layer; "
            "AutoRound's loss only"
        )

    def _on_block_wrapped(self, block: nn.Module) -> None:
        session = self._session
        if session is not None and session.layer is block:
            session.set_sample_masks(seams.sample_valid_masks(self))
            session.begin_tuning()

    def vsraq_step_loss(
        self, host: torch.Tensor, indices: Any, masks: Any
    ) -> torch.Tensor:
        session = self._session
        if session is None:
            return host
        return session.step_loss(host, indices, masks)


register_algorithm(
    "vsraq",
    aliases=("vsraq",),
    config_factory=VSRAQSignRoundConfig,
    summary="SignRound with the routing-aware VSRAQ loss for MoE models "
    "(vsraq-modifier).",
)


def ensure_registered() -> None:
    """Check that AutoRound maps :class:`VSRAQSignRoundConfig` to
    :class:`VSRAQQuantizer` (importing this module registered it)."""
    seams.require_quantizer(VSRAQSignRoundConfig, VSRAQQuantizer)
