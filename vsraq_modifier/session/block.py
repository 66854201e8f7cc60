"""``BlockSession``: one decoder block's VSRAQ life, whatever the host.

A host (AutoRound, or llm-compressor through AutoRound) tunes one decoder layer at
a time. For that layer the session

1. captures the full-precision reference: the logits of the layer's own router(s)
   and of the look-ahead router (the next MoE router downstream), on the host's
   reference forward (:meth:`capture_reference` ... :meth:`end_reference`);
2. starts tuning (:meth:`start`): checks the reference covers the samples tuned on
   and that some token counts in the loss;
3. measures routing agreement with the block as it is (:meth:`measure`; before and
   after tuning);
4. gives the routing loss of each tuning step (:meth:`step_loss`), the host's loss
   plus the routing objective, with NaN/inf stopping the run; with
   ``best_on_host`` (the default safeguard) the loss's *value* is the host's own,
   so the host's best-iteration choice is made on its reconstruction error while
   the gradient is the full objective's;
5. finishes (:meth:`finish`): the block's weights are checked finite; with
   ``refit`` the block's own routers are re-fitted to the inputs the tuned block
   gives them (:mod:`vsraq_modifier.refit`, kept only where held-aside agreement
   rises), before the host computes the block's output for the next block; the
   agreement after tuning is measured and a :class:`BlockReport` is returned.

Host-free: the host hands it callables (its block forward) and tensors; it imports
torch and the project's core only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vsraq_modifier.guards import (
    check_finite_block,
    check_finite_loss,
    check_finite_router_logits,
    check_valid_tokens,
)
from vsraq_modifier.lookahead import LookaheadPath
from vsraq_modifier.objective import (
    BlockObjective,
    FlipCap,
    NonFiniteRoutingError,
    RouterPair,
    flip_cap_scale,
)
from vsraq_modifier.objective.combine import world_size
from vsraq_modifier.refit import RefitOptions, RefitResult, apply_fit, refit_router
from vsraq_modifier.routers.base import RouterSite
from vsraq_modifier.routing import RouterSpec
from vsraq_modifier.session.block_report import BlockReport
from vsraq_modifier.session.taps import (
    AHEAD,
    Agreement,
    ReferenceStore,
    RouterTaps,
    TapRecord,
)

__all__ = ["MEASURE_SAMPLES", "BlockForward", "BlockSession", "Phase"]

#: calibration samples the before/after agreement of the log line is measured on
#: (the same samples before and after, so the change is paired): one default batch,
#: 2048 tokens at 256 per sample. Each pass is a no-grad forward with the
#: look-ahead; over all 128 default samples the two cost about 10 % of a
#: 100-iteration block, over 32 about 2 % of a DeepSeek-V3 cell's time (profiled),
#: which the log line alone does not need
MEASURE_SAMPLES = 8

#: the host's forward of the block on the calibration samples ``indices``
BlockForward = Callable[[list[int]], Any]


class Phase(enum.Enum):
    """What the taps' records are for."""

    REFERENCE = "reference"  # full-precision forward: records are stored
    MEASURE = "measure"  # agreement pass: records are compared, not kept
    TUNE = "tune"  # tuning forward: the record feeds the next step_loss


class _RoutersReached(Exception):
    """Raised by the router-input hook: the rest of the block is not needed."""


def _floats(terms: dict | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (terms or {}).items()}


class BlockSession:
    """State of one decoder layer from its reference forward to its log line.

    ``own``: the layer's routers; ``path``: the look-ahead to the next router (None
    when there is none or it is off); ``objective``: None for ``loss=mse`` (the
    routers are only measured); ``param_name`` maps the host's parameter names to
    the model's (for error messages).
    """

    def __init__(
        self,
        index: int,
        layer: nn.Module,
        own: Sequence[RouterSite],
        path: LookaheadPath | None,
        *,
        objective: BlockObjective | None,
        loss: str,
        lookahead_every: int = 1,
        lookahead_attention: str = "full",
        best_on_host: bool = True,
        max_flip_share: float | None = None,
        param_name: Callable[[str], str] | None = None,
        refit: RefitOptions | None = None,
    ) -> None:
        self.index, self.layer, self.own, self.path = index, layer, list(own), path
        self.objective = objective
        self.loss = loss
        self.lookahead_every = lookahead_every
        #: tuning steps run the look-ahead with the path's attention frozen at
        #: the reference (``lookahead_attention: reference``; only where there
        #: is an attention on the path and a routing loss to feed)
        self.frozen_attention = (
            lookahead_attention == "reference"
            and objective is not None
            and path is not None
            and bool(path.attention_layers)
        )
        self.best_on_host = best_on_host
        self.max_flip_share = max_flip_share
        #: the routing terms' factor for this block (set at its first step)
        self.cap: FlipCap | None = None
        self.param_name = param_name
        self.refit = refit if refit is not None and refit.method != "none" else None
        #: router decoder layer -> the re-fit's outcome (after :meth:`finish`)
        self.refits: dict[int, RefitResult] = {}
        self.specs: dict[int | str, RouterSpec] = {s.layer: s.spec for s in own}
        #: record key -> decoder layer of that router; its label in the log
        self.layers: dict[int | str, int] = {s.layer: s.layer for s in own}
        self.names: dict[int, str] = {s.layer: f"L{s.layer}" for s in own}
        if path is not None:
            self.specs[AHEAD] = path.site.spec
            self.layers[AHEAD] = path.site.layer
            self.names[path.site.layer] = f"L{path.site.layer} (look-ahead)"
        self.phase = Phase.REFERENCE
        self.ref = ReferenceStore()
        self.taps = RouterTaps(layer, self.own, path, self._on_record)
        self.before, self.after = Agreement(), Agreement()
        #: per tuning iteration: the host loss and the total loss (host +
        #: routing), summed over the iteration's calls
        self.host_iters: list[float] = []
        self.total_iters: list[float] = []
        self._handles: list = []
        self._record: TapRecord | None = None
        self._forward: BlockForward | None = None
        self._inputs: Any = None
        self._masks: list[torch.Tensor] | None = None
        self._calls = 0
        self._calls_per_iter = 1
        self._batch_size = 8
        self._keeps_best = True

    # --- hooks ---------------------------------------------------------------
    def _on_record(self, record: TapRecord) -> None:
        if self.phase is Phase.REFERENCE:
            self.ref.add(record)
        else:
            self._record = record

    def _take(self) -> TapRecord:
        record, self._record = self._record, None
        if record is None:
            raise RuntimeError(
                "vsraq: no router record for this forward; the block forward "
                "bypassed the decoder layer's hooks (is torch.compile on?)"
            )
        return record

    def _attach(self) -> list:
        self.detach()
        self._handles = self.taps.attach()
        return self._handles

    def detach(self) -> None:
        """Remove the taps (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # --- 1. reference --------------------------------------------------------
    def capture_reference(self) -> list:
        """Tap the host's full-precision forward of the block; returns the hook
        handles (the host may remove them itself)."""
        self.phase = Phase.REFERENCE
        self.taps.ahead_enabled = self.path is not None
        self.taps.record_attention = self.frozen_attention
        return self._attach()

    def end_reference(self) -> None:
        self.detach()
        self.taps.record_attention = False

    # --- 2. start ------------------------------------------------------------
    def start(
        self,
        *,
        nsamples: int,
        inputs: Any,
        forward: BlockForward,
        calls_per_iter: int,
        batch_size: int = 8,
        sample_masks: list[torch.Tensor] | None = None,
        loss_masks: Sequence[torch.Tensor] | None = None,
        keeps_best: bool = True,
    ) -> None:
        """Tuning of this block is about to start on ``nsamples`` samples.

        ``forward(indices)`` runs the block on those samples; ``sample_masks``:
        the valid-token mask of each sample (None: all valid), used by the
        agreement passes; ``loss_masks``: the masks the host's loss uses, checked
        for a token that counts; ``calls_per_iter``: host-loss calls per tuning
        iteration (gradient accumulation); ``batch_size``: samples per agreement
        forward; ``keeps_best``: the host keeps its best iteration (False: the
        last, AutoRound's ``not_use_best_mse``)."""
        self.end_reference()
        if self.ref.samples != nsamples:
            raise RuntimeError(
                f"vsraq: reference router logits cover {self.ref.samples} samples, "
                f"the block is tuned on {nsamples}"
            )
        check_valid_tokens(loss_masks, self.index)
        self._inputs, self._forward = inputs, forward
        self._masks = sample_masks
        self._calls_per_iter = calls_per_iter
        self._batch_size = batch_size
        self._keeps_best = keeps_best
        if self.objective is not None:
            self.objective.reset()

    def set_sample_masks(self, masks: list[torch.Tensor] | None) -> None:
        """The valid-token mask of each calibration sample (None: all valid),
        for the agreement passes; the host may know them only once tuning
        starts."""
        self._masks = masks

    def begin_tuning(self) -> None:
        """The host has wrapped the block for tuning: measure the agreement of the
        initial rounding, then tap every tuning forward."""
        self.measure(self.before)
        self.phase = Phase.TUNE
        self.taps.ahead_enabled = self.objective is not None and self.path is not None
        self.taps.defer_ahead = self.frozen_attention
        self._attach()

    # --- 3. measure ----------------------------------------------------------
    @torch.no_grad()
    def measure(self, table: Agreement) -> None:
        """Route the first :data:`MEASURE_SAMPLES` calibration samples through the
        block as it is now and count the tokens whose expert set matches the
        reference (look-ahead included)."""
        if not isinstance(self._inputs, list) or self._forward is None:
            return  # dict inputs (diffusion) have no routers to measure
        self.phase = Phase.MEASURE
        self.taps.ahead_enabled = self.path is not None
        self.taps.defer_ahead = False  # agreement: the whole path, as in service
        handles = self.taps.attach()
        try:
            n = min(len(self._inputs), MEASURE_SAMPLES)
            bs = self._batch_size
            for start in range(0, n, bs):
                idx = list(range(start, min(n, start + bs)))
                self._forward(idx)
                record = self._take()
                mask = self._mask(self._masks, idx)
                for key, logits in record.logits.items():
                    ref = self.ref.get(key, idx)
                    table.update(self.layers[key], logits, ref, self.specs[key], mask)
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _mask(masks: Sequence[torch.Tensor] | None, indices: Any) -> Any:
        if not masks:
            return None
        return torch.cat([masks[int(i)] for i in indices], dim=0).reshape(-1).bool()

    # --- 4. tuning steps -----------------------------------------------------
    @property
    def iteration(self) -> int:
        """The tuning iteration the next host-loss call belongs to."""
        return self._calls // self._calls_per_iter

    def _note_host(self, value: float) -> None:
        if self._calls % self._calls_per_iter == 0:
            self.host_iters.append(0.0)
            self.total_iters.append(0.0)
        self.host_iters[-1] += value
        self.total_iters[-1] += value
        self._calls += 1

    def _cap(self, host: torch.Tensor, extra: torch.Tensor) -> None:
        """At the block's first step: the routing terms' factor under which they
        overturn at most ``max_flip_share`` of the host's step signs (two extra
        gradients, once per block)."""
        if self.cap is not None or self.max_flip_share is None:
            return
        params = [p for p in self.layer.parameters() if p.requires_grad]
        if not params or not host.requires_grad or not extra.requires_grad:
            self.cap = FlipCap(1.0, 0.0, 0.0)
            return
        if world_size() > 1:  # the host wraps blocks in DDP
            # DDP (AutoRound's multi-process path) supports backward() only:
            # torch.autograd.grad on its graph corrupts the gradient all-reduce
            # (measured: two-rank runs parted from one process in layer 0)
            self.cap = FlipCap(1.0, float("nan"), float("nan"))
            return
        gh = torch.autograd.grad(host, params, retain_graph=True, allow_unused=True)
        gr = torch.autograd.grad(extra, params, retain_graph=True, allow_unused=True)
        self.cap = flip_cap_scale(gh, gr, params, self.max_flip_share)

    def _value(self, host: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """The step's loss: gradient of host + extra; value host + extra, or the
        host's alone with ``best_on_host`` (x - x is exactly 0 in floating point,
        so the host then sees its own loss bit for bit)."""
        self._cap(host, extra)
        if self.cap is not None and self.cap.scale < 1.0:
            extra = extra * self.cap.scale
        self.total_iters[-1] += float(extra.detach())
        if self.best_on_host:
            return host + (extra - extra.detach())
        return host + extra

    def step_loss(
        self, host: torch.Tensor, indices: Any, loss_masks: Any = None
    ) -> torch.Tensor:
        """The loss of one tuning step: ``host`` (the host's block loss on the
        samples ``indices``) plus the routing objective of the forward that
        produced it; NaN/inf anywhere stops the run naming the layer."""
        if self.phase is not Phase.TUNE:
            return host
        record = self._take()
        if record.ahead_input is not None and self.path is not None:
            record.logits[AHEAD] = self.path(
                record.ahead_input,
                attention=self.ref.attention(indices, like=record.ahead_input),
                **record.kwargs,
            )
        self._note_host(float(host.detach()))
        if self.objective is not None and self.path is not None:
            # lookahead_every = n: the next step runs the look-ahead if n divides
            # its iteration (the agreement passes always run it)
            self.taps.ahead_enabled = self.iteration % self.lookahead_every == 0
        check_finite_loss(host, self.layer, self.index, self.param_name)
        if self.objective is None or not record.logits:
            return host
        mask = self._mask(loss_masks, indices)
        pairs = []
        for key, logits in record.logits.items():
            ref = self.ref.get(key, indices).to(logits.device)
            m = None if mask is None else mask.to(logits.device)
            pairs.append(RouterPair(logits, ref, self.specs[key], mask=m))
        try:
            extra, _terms = self.objective(pairs, host_loss=host, slots=len(self.specs))
        except NonFiniteRoutingError:
            self._check_logits(record.logits.keys(), pairs)  # names the router
            raise
        check_finite_loss(
            host + extra.detach(),
            self.layer,
            self.index,
            self.param_name,
            what="total loss",
        )
        return self._value(host, extra)

    def _check_logits(self, keys: Any, pairs: Sequence[RouterPair]) -> None:
        logits = {}
        for key, pair in zip(keys, pairs):
            label = self.names.get(self.layers[key], str(key))
            mask = None if pair.mask is None else pair.mask.reshape(-1)
            z = pair.logits.reshape(-1, pair.logits.shape[-1])
            ref = pair.ref_logits.reshape(-1, pair.ref_logits.shape[-1])
            logits[label] = (z, ref) if mask is None else (z[mask], ref[mask])
        path = self.path
        ahead = dict(enumerate(path.layers, start=path.first_layer)) if path else {}
        check_finite_router_logits(
            logits, self.layer, self.index, ahead, self.param_name
        )

    # --- 5. finish -----------------------------------------------------------
    def finish(self) -> BlockReport:
        """After tuning: the block's weights finite, its routers re-fitted (with
        ``refit``), agreement after tuning; returns the block's report."""
        self.detach()
        check_finite_block(self.layer, self.index, self.param_name)
        if self.refit is not None:
            self.refit_routers()
        self.measure(self.after)
        return self.report()

    @torch.no_grad()
    def _router_inputs(self, sites: Sequence[RouterSite]) -> dict[int, torch.Tensor]:
        """Each router's input on every calibration sample, through the block as
        it is now (quantized inputs, tuned weights): [samples * seq, hidden].

        A router sits upstream of its experts, so each forward stops once every
        router of ``sites`` has seen its input: the experts are not computed."""
        got: dict[int, list[torch.Tensor]] = {s.layer: [] for s in sites}
        seen: set[int] = set()
        handles = []
        for site in sites:

            def hook(_m: nn.Module, args: tuple, layer: int = site.layer) -> None:
                x = args[0]
                got[layer].append(x.detach().reshape(-1, x.shape[-1]).cpu())
                seen.add(layer)
                if len(seen) == len(got):
                    raise _RoutersReached

            router = self.layer.get_submodule(site.name)
            handles.append(router.register_forward_pre_hook(hook))
        try:
            n = len(self._inputs)
            for start in range(0, n, self._batch_size):
                seen.clear()
                try:
                    self._forward(list(range(start, min(n, start + self._batch_size))))
                except _RoutersReached:
                    pass
        finally:
            for h in handles:
                h.remove()
        return {k: torch.cat(v) for k, v in got.items()}

    def refit_routers(self) -> None:
        """Re-fit the block's own routers to their inputs in the quantized model,
        against the reference logits captured before tuning (the look-ahead
        router is re-fitted in its own block, on the inputs it will see then)."""
        if not self.own or not isinstance(self._inputs, list) or self._forward is None:
            return
        inputs = self._router_inputs(self.own)
        samples = list(range(len(self._inputs)))
        mask = self._mask(self._masks, samples)
        for site in self.own:
            router = self.layer.get_submodule(site.name)
            bias = getattr(router, "bias", None)
            x = inputs[site.layer]
            # the inputs wait on the CPU; the solve runs on the router's CUDA
            # device, or the CPU (refit.solve_device); the fit comes back on the
            # router's device
            result = refit_router(
                router.weight.detach(),
                bias.detach() if isinstance(bias, torch.Tensor) else None,
                site.spec,
                x,
                self.ref.get(site.layer, samples),
                None if mask is None else mask.cpu(),
                self.refit,
                dtype=router.weight.dtype,
            )
            apply_fit(router, site.spec, result)
            self.refits[site.layer] = result

    def kept_iteration(self) -> int | None:
        """The tuning iteration whose rounding the host keeps, as its best-loss
        rule picks it from the values this session gave it (None: no tuning or
        no routing loss)."""
        if self.objective is None or not self.host_iters:
            return None
        if not self._keeps_best:
            return len(self.host_iters) - 1
        values = self.host_iters if self.best_on_host else self.total_iters
        return min(range(len(values)), key=values.__getitem__)

    def report(self) -> BlockReport:
        first = self.host_iters[0] if self.host_iters else float("nan")
        last = self.host_iters[-1] if self.host_iters else float("nan")
        obj = self.objective
        kept = self.kept_iteration()
        return BlockReport(
            layer=self.index,
            loss=self.loss,
            iters=len(self.host_iters),
            host_first=first,
            host_last=last,
            terms_first=_floats(getattr(obj, "first", None)),
            terms_last=_floats(getattr(obj, "last", None)),
            agreement_before={
                self.names[k]: v for k, v in self.before.exact_match().items()
            },
            agreement_after={
                self.names[k]: v for k, v in self.after.exact_match().items()
            },
            reference_bytes=self.ref.nbytes,
            kept_iter=kept,
            cap=None
            if self.cap is None
            else (self.cap.scale, self.cap.before, self.cap.after),
            kept_on="host" if self.best_on_host else "total",
            host_kept=float("nan") if kept is None else self.host_iters[kept],
            host_best=min(self.host_iters) if kept is not None else float("nan"),
            refit={self.names[k]: r.summary() for k, r in sorted(self.refits.items())},
        )
