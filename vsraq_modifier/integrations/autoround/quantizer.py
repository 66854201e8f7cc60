"""``VSRAQQuantizer``: AutoRound's SignRound tuning plus the routing objective.

Where it plugs into AutoRound 0.15.1 (``algorithms/composer.py``,
``sign_round/quantizer.py``):

1. ``register_fp_input_forward_hooks`` runs right before AutoRound's
   full-precision reference forward of a block: the taps store the reference
   logits of the block's own router(s) and of the look-ahead router (the next MoE
   router, reached through the full-precision layers in between).
2. ``wrapper_block`` (an instance attribute AutoRound calls once the block's
   linears are wrapped for tuning): measure router agreement with the initial
   rounding, then tap every tuning forward.
3. ``_get_loss``: AutoRound's own loss plus ``BlockObjective(pairs)``; the pairs
   come from the tuning forward that produced ``pred_output``.
4. After tuning: agreement with the final weights, one log line per block.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from auto_round.algorithms.quantization.sign_round.quantizer import SignRoundQuantizer
from auto_round.wrapper import wrapper_block
from loguru import logger
from torch import nn

from vsraq_modifier.guards import check_finite_block
from vsraq_modifier.integrations.autoround.block_run import BlockRun, floats
from vsraq_modifier.integrations.autoround.checks import (
    check_run,
    check_step,
    check_tokens,
)
from vsraq_modifier.integrations.autoround.config import (
    VSRAQOptionError,
    VSRAQSignRoundConfig,
)
from vsraq_modifier.integrations.autoround.report import BlockReport
from vsraq_modifier.integrations.autoround.taps import Agreement
from vsraq_modifier.lookahead import LookaheadPath, next_router_path
from vsraq_modifier.objective import BlockObjective, NonFiniteRoutingError, RouterPair
from vsraq_modifier.routers import UnsupportedModelError, find_routers
from vsraq_modifier.routers.base import RouterSite, decoder_layers, text_config

__all__ = ["VSRAQQuantizer", "MEASURE_SAMPLES"]

#: calibration samples the before/after agreement of the log line is measured on:
#: two no-grad passes over all 128 default samples cost about 10 % of a 100-iteration
#: block; 32 samples (8192 tokens at 256 per sample) cost about 2.5 %
MEASURE_SAMPLES = 32


class VSRAQQuantizer(SignRoundQuantizer):
    """SignRound with ``loss = host + BlockObjective(routers)`` per block.

    Registered for :class:`VSRAQSignRoundConfig` (``register.py``). Forward hooks
    need an eager block forward, so torch.compile is switched off (logged).
    """

    def __init__(self, config: VSRAQSignRoundConfig) -> None:
        super().__init__(config)
        config.check_vsraq()  # options may have been set after construction
        self.vsraq = config.vsraq
        routing = self.vsraq.is_routing_loss
        self.objective = BlockObjective(self.vsraq) if routing else None
        if routing and self.enable_lfq:
            self.enable_lfq = False
            logger.info(
                "vsraq: enable_lfq switched off: it replaces the last block's loss "
                "by an LM cross-entropy that would bypass the routing objective"
            )
        self.wrapper_block = self._wrap_block
        self.reports: list[BlockReport] = []
        self._sites: list[RouterSite] = []
        self._layers: list[nn.Module] = []
        self._layer_names: dict[int, str] = {}
        self._offloader: Any = None
        self._run: BlockRun | None = None
        #: decoder layer whose captured inputs AutoRound replays on every block
        self._inputs_of: int | None = None

    # --- run setup -------------------------------------------------------------
    def can_compile_block_forward(self) -> bool:
        return False

    def bind(self, orchestrator: Any) -> None:
        super().bind(orchestrator)
        self._offloader = getattr(orchestrator, "_offloader", None)
        ctx = self.compress_context
        if ctx is not None and getattr(ctx, "enable_torch_compile", False):
            ctx.enable_torch_compile = False
            logger.info(
                "vsraq: torch.compile switched off: the routing loss reads router "
                "logits with forward hooks, which a compiled block would skip"
            )
        self._find_routers()

    def _find_routers(self) -> None:
        model = self.model
        try:
            self._sites = find_routers(model)
        except UnsupportedModelError:
            if self.vsraq.is_routing_loss:
                raise
            logger.warning("vsraq: no MoE router found; loss=mse runs plain AutoRound")
            self._sites = []
            return
        self._layers = list(decoder_layers(model))
        ids = {id(m) for m in self._layers}
        self._layer_names = {id(m): n for n, m in model.named_modules() if id(m) in ids}
        ahead = "on" if self.vsraq.lookahead else "off"
        layers = [s.layer for s in self._sites]
        logger.info(
            f"vsraq: loss={self.vsraq.loss}, options {self.vsraq.model_dump()}; "
            f"MoE routers at layers {layers}; look-ahead {ahead}"
        )
        check_run(self)  # calibration data and memory, before calibration

    def _layer_index(self, block: nn.Module) -> int | None:
        for i, layer in enumerate(self._layers):
            if layer is block:
                return i
        return None

    # --- 1. reference ----------------------------------------------------------
    def register_fp_input_forward_hooks(self, block: nn.Module) -> list:
        handles = list(super().register_fp_input_forward_hooks(block))
        self._run = None
        if not self._sites:
            return handles
        index = self._layer_index(block)
        if index is None:
            if type(block).__name__ == "WrapperMultiblock":
                raise VSRAQOptionError(
                    "vsraq tunes one decoder layer at a time; remove nblocks"
                )
            return handles  # not a decoder layer (e.g. a vision tower block)
        if self._inputs_of is None:
            self._inputs_of = index
        own = [s for s in self._sites if s.layer == index]
        path = None
        if self.vsraq.lookahead:
            path = next_router_path(self._layers, self._sites, index)
        if not own and path is None:
            return handles
        self._prepare_lookahead(path, block)
        run = BlockRun(index, block, own, path)
        run.handles = run.taps.attach()
        self._run = run
        return handles + run.handles

    def _prepare_lookahead(self, path: LookaheadPath | None, block: nn.Module) -> None:
        """AutoRound may have offloaded the untuned layers (low_cpu_mem_usage: their
        weights emptied or on meta); bring the look-ahead layers back. They stay
        loaded: AutoRound's own reload at their turn is then a no-op.

        AutoRound replays the first block's captured inputs on every block, so
        the attention mask is of that layer's type; a look-ahead layer of another
        type (gpt-oss sliding/full, Nemotron-H) gets the mask of its own."""
        if path is None:
            return
        from auto_round.modeling.fused_moe.replace_modules import materialize_model_
        from auto_round.utils import convert_module_to_hp_if_necessary

        from vsraq_modifier.integrations.llmcompressor.masks import lookahead_kwargs

        config = text_config(self.model.config)
        path.kwargs_for = lookahead_kwargs(config, self._inputs_of or 0)

        device = next(block.parameters()).device
        for layer in path.layers:
            name = self._layer_names[id(layer)]
            if self._offloader is not None:
                self._offloader.reload(self.model, name)
            materialize_model_(layer)
            convert_module_to_hp_if_necessary(
                layer, self.model_context.amp_dtype, device
            )
            if any(p.is_meta or p.numel() == 0 for p in layer.parameters()):
                raise RuntimeError(
                    f"vsraq: the look-ahead layer {name} has no weights (offloaded "
                    "and not restorable); run with low_cpu_mem_usage=False "
                    "(--disable_low_cpu_mem_usage)"
                )
            layer.to(device)

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
        run, self._run = self._run, None
        if run is not None:
            run.detach()  # reference taps (AutoRound removes them too)
        args = (block, fp_inputs, input_others, fp_outputs, q_inputs, block_ctx)
        if run is None or run.layer is not block:
            if self._sites and self._layer_index(block) is not None:
                own = [s for s in self._sites if s.layer == self._layer_index(block)]
                if own or (self.vsraq.lookahead and self._has_router_after(block)):
                    raise RuntimeError(
                        "vsraq: the full-precision reference forward of this block ran "
                        "without the VSRAQ hooks (the host supplied reference outputs, "
                        "as llm-compressor's AutoRoundModifier does); use "
                        "VSRAQModifier for llm-compressor"
                    )
                logger.info(
                    f"vsraq layer {self._layer_index(block)}: no MoE router at or "
                    "after this layer; AutoRound's loss only"
                )
            return super().quantize_block(*args, input_ids=input_ids, **kwargs)

        active = (
            q_inputs
            if (q_inputs is not None and self.enable_quanted_input)
            else fp_inputs
        )
        nsamples = (
            len(active) if isinstance(active, list) else self._count_samples(active)
        )
        if run.ref.samples != nsamples:
            raise RuntimeError(
                f"vsraq: reference router logits cover {run.ref.samples} samples, the "
                f"block is tuned on {nsamples}"
            )
        bs = self.calibration_context.batch_size
        run.calls_per_iter = math.ceil(
            min(nsamples, bs * self.gradient_accumulate_steps) / bs
        )
        check_tokens(self, input_ids, run.index)
        run.inputs, run.others = active, input_others
        if self.objective is not None:
            self.objective.reset()
        self._run = run
        try:
            best = super().quantize_block(*args, input_ids=input_ids, **kwargs)
            check_finite_block(block, run.index)
            run.detach()
            self._measure(run, run.after)
        finally:
            run.detach()
            self._run = None
            self._release_lookahead(run)
        report = self._report(run)
        self.reports.append(report)
        logger.info(report.line())
        return best

    def _has_router_after(self, block: nn.Module) -> bool:
        index = self._layer_index(block)
        return index is not None and any(s.layer > index for s in self._sites)

    def _wrap_block(self, block: nn.Module, *args: Any, **kwargs: Any) -> Any:
        names = wrapper_block(block, *args, **kwargs)
        run = self._run
        if run is not None and run.layer is block:
            self._measure(run, run.before)
            run.phase = "tune"
            run.taps.ahead_enabled = self.objective is not None and run.path is not None
            run.handles = run.taps.attach()
        return names

    @torch.no_grad()
    def _measure(self, run: BlockRun, table: Agreement) -> None:
        """Route the first ``MEASURE_SAMPLES`` calibration samples through the
        block as it is now and count the tokens whose expert set matches the
        reference."""
        if not isinstance(run.inputs, list):
            return  # dict inputs (diffusion) have no routers to measure
        run.phase = "measure"
        run.taps.ahead_enabled = run.path is not None
        handles = run.taps.attach()
        masks = getattr(self, "_cached_valid_token_mask", None)
        try:
            n = min(len(run.inputs), MEASURE_SAMPLES)
            bs = self.block_forward.batch_size
            for start in range(0, n, bs):
                idx = list(range(start, min(n, start + bs)))
                self.block_forward(run.layer, run.inputs, run.others, indices=idx)
                record = run.take()
                mask = self._mask(masks, idx)
                for key, logits in record.logits.items():
                    ref = run.ref.get(key, idx)
                    table.update(run.layers[key], logits, ref, run.specs[key], mask)
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _mask(masks: list | None, indices: Any) -> torch.Tensor | None:
        if not masks:
            return None
        return torch.cat([masks[int(i)] for i in indices], dim=0).reshape(-1).bool()

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
        run = self._run
        if run is None or run.phase != "tune":
            return host
        record = run.take()
        run.note_host(float(host.detach()))
        if self.objective is not None and run.path is not None:
            # lookahead_every = n: the next step runs the look-ahead if n divides
            # its iteration (the agreement passes always run it)
            run.taps.ahead_enabled = run.iteration % self.vsraq.lookahead_every == 0
        check_step(self, host)  # NaN/inf: stop, naming the layer
        if self.objective is None or not record.logits:
            return host
        mask = self._mask(valid_token_mask, indices)
        pairs = []
        for key, logits in record.logits.items():
            ref = run.ref.get(key, indices).to(logits.device)
            m = None if mask is None else mask.to(logits.device)
            pairs.append(RouterPair(logits, ref, run.specs[key], mask=m))
        try:
            extra, _terms = self.objective(pairs, host_loss=host, slots=len(run.specs))
        except NonFiniteRoutingError:
            check_step(self, host, record.logits.keys(), pairs)  # names the router
            raise
        return host + extra

    # --- teardown ----------------------------------------------------------------
    def _release_lookahead(self, run: BlockRun) -> None:
        if run.path is None:
            return
        from auto_round.utils import mv_module_from_gpu

        for layer in run.path.layers:
            mv_module_from_gpu(layer)

    def _report(self, run: BlockRun) -> BlockReport:
        first = run.host_iters[0] if run.host_iters else float("nan")
        last = run.host_iters[-1] if run.host_iters else float("nan")
        obj = self.objective
        return BlockReport(
            layer=run.index,
            loss=self.vsraq.loss,
            iters=len(run.host_iters),
            host_first=first,
            host_last=last,
            terms_first=floats(getattr(obj, "first", None)),
            terms_last=floats(getattr(obj, "last", None)),
            agreement_before={
                run.names[k]: v for k, v in run.before.exact_match().items()
            },
            agreement_after={
                run.names[k]: v for k, v in run.after.exact_match().items()
            },
            reference_bytes=run.ref.nbytes,
        )
