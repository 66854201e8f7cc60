"""How much each unit alone hurts the model at each candidate scheme.

For unit ``u`` and scheme ``s``, the unit's weights are rounded to nearest with the
scheme's own quantizer (AutoRound's ``rtn_int_sym`` / ``rtn_int_asym`` through
``auto_round.data_type.get_quant_func``, what ``iters=0`` runs), every other weight
left in full precision, and the model runs on each domain's calibration chunks:

- ``kl``: KL(reference || quantized) of the next-token distributions, mean over the
  predicting positions of the domain;
- ``disagreement``: 1 - Jaccard of the top-k expert sets, mean over the tokens and
  over the routers downstream of the unit (the router shift it causes; a layer's
  attention is upstream of its own router, its experts are not).

Cost: one reference pass plus one pass per (unit, scheme), each over every domain's
chunks: ``(1 + units x schemes) x chunks`` forward passes, linear in units x schemes;
a pass for a unit of layer ``l`` replays the reference outputs of layers ``< l``
instead of running them.
Expert usage per domain (share of each domain's top-k slots an expert receives) is
read from the reference pass.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vsraq_modifier.allocate.schemes import Scheme
from vsraq_modifier.allocate.units import Unit
from vsraq_modifier.metrics.hooks import RouterNotCalledError, RoutingCapture
from vsraq_modifier.routers.base import decoder_layers
from vsraq_modifier.routers.registry import find_routers
from vsraq_modifier.routing import set_jaccard

__all__ = ["Measurement", "combine", "measure", "quantized", "rtn"]


def rtn(weight: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """Round-to-nearest of an [out, in] weight with AutoRound's RTN quantizer
    (groups of ``scheme.group_size`` inputs per output row)."""
    from auto_round.data_type import get_quant_func

    fn, _ = get_quant_func(
        scheme.data_type, scheme.bits, scheme.sym, disable_opt_rtn=True, iters=0
    )
    q, _scale, _zp = fn(weight.float(), bits=scheme.bits, group_size=scheme.group_size)
    return q.to(weight.dtype)


def _view(model: nn.Module, part) -> torch.Tensor:
    p = model.get_parameter(part.param)
    w = p[part.expert] if part.expert is not None else p
    return w.T if part.transposed else w


@contextlib.contextmanager
def quantized(model: nn.Module, unit: Unit, scheme: Scheme) -> Iterator[None]:
    """``unit``'s weights round-to-nearest at ``scheme`` inside the block, restored
    exactly on exit."""
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for part in unit.parts:
                w = _view(model, part)
                saved.append((w, w.clone()))
                w.copy_(rtn(w, scheme))
        yield
    finally:
        with torch.no_grad():
            for w, original in reversed(saved):
                w.copy_(original)


@dataclass
class Measurement:
    """Per domain d, unit u, scheme s: ``kl[d, u, s]``, ``disagreement[d, u, s]``;
    ``usage[d]``: [MoE layers, experts] share of top-k slots (``router_layers``)."""

    domains: list[str]
    units: list[str]
    schemes: list[str]
    kl: torch.Tensor
    disagreement: torch.Tensor
    usage: dict[str, torch.Tensor]
    router_layers: list[int]
    tokens: dict[str, int]
    forward_passes: int
    seconds: float


def _kl_sum(ref_lp: torch.Tensor, q_lp: torch.Tensor) -> float:
    """Sum over positions of KL(ref || q), from float32 log-probabilities
    renormalised in float64 (so the sum cannot go below zero by rounding)."""
    r = torch.log_softmax(ref_lp.double(), dim=-1)
    q = torch.log_softmax(q_lp.double(), dim=-1)
    return float((r.exp() * (r - q)).sum().item())


def _downstream(unit: Unit, layers: list[int]) -> list[int]:
    after_block = unit.kind in ("experts", "expert", "shared")
    return [
        layer
        for layer in layers
        if layer > unit.layer or (layer == unit.layer and not after_block)
    ]


class _LayerCache:
    """The reference outputs of every decoder layer per chunk; while a unit of
    layer ``l`` is measured, layers before ``l`` return them instead of running
    (their inputs and weights are the reference's), which halves the cost of a
    pass on average."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.layers = layers
        self.outputs: dict[tuple[str, int], list[Any]] = {}
        self.key: tuple[str, int] = ("", 0)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        def hook(index: int):
            def fn(module: nn.Module, args: Any, output: Any) -> None:
                self.outputs.setdefault(self.key, [None] * len(self.layers))[index] = (
                    output
                )

            return fn

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.layers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def skipping(self, before: int) -> Iterator[None]:
        def replay(index: int):
            def fn(*args: Any, **kwargs: Any) -> Any:
                return self.outputs[self.key][index]

            return fn

        for i in range(before):
            self.layers[i].forward = replay(i)
        try:
            yield
        finally:
            for i in range(before):
                del self.layers[i].forward


@torch.no_grad()
def _run(
    model: nn.Module, capture: RoutingCapture, ids: torch.Tensor, need: list[int]
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    capture.reset()
    device = next(model.parameters()).device
    out = model(input_ids=ids.to(device).unsqueeze(0), use_cache=False)
    missing = [layer for layer in need if layer not in capture.routings]
    if missing:
        raise RouterNotCalledError(
            f"routers of decoder layers {missing} did not run in the forward pass"
        )
    lp = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)
    return lp, {layer: r.indices for layer, r in capture.routings.items()}


def measure(
    model: nn.Module,
    units: Sequence[Unit],
    schemes: Sequence[Scheme],
    chunks: dict[str, list[torch.Tensor]],
    *,
    progress: bool = True,
) -> Measurement:
    """Measure every (unit, scheme) on every domain's chunks (module docstring)."""
    start = time.perf_counter()
    sites = find_routers(model)
    layers = [s.layer for s in sites]
    num_experts = sites[0].spec.num_experts
    names = list(chunks)
    ref: dict[str, list[tuple[torch.Tensor, dict[int, torch.Tensor]]]] = {}
    usage: dict[str, torch.Tensor] = {}
    passes = 0
    cache = _LayerCache(decoder_layers(model))
    with RoutingCapture(sites) as capture:
        for d in names:
            ref[d] = []
            with cache.recording():
                for c, ids in enumerate(chunks[d]):
                    cache.key = (d, c)
                    ref[d].append(_run(model, capture, ids, layers))
            passes += len(chunks[d])
            counts = torch.zeros(len(layers), num_experts, dtype=torch.float64)
            for _, routing in ref[d]:
                for j, layer in enumerate(layers):
                    idx = routing[layer].reshape(-1).cpu()
                    counts[j] += torch.bincount(idx, minlength=num_experts).double()
            usage[d] = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
        shape = (len(names), len(units), len(schemes))
        kl = torch.zeros(shape, dtype=torch.float64)
        dis = torch.zeros(shape, dtype=torch.float64)
        total = len(units) * len(schemes)
        bar = tqdm(total=total, desc="sensitivity", unit="run", disable=not progress)
        for ui, unit in enumerate(units):
            down = _downstream(unit, layers)
            for si, scheme in enumerate(schemes):
                bar.set_postfix_str(f"{unit.name} {scheme.label}", refresh=False)
                with quantized(model, unit, scheme), cache.skipping(unit.layer):
                    for di, d in enumerate(names):
                        kl_sum, n_pred, dis_sum, n_tok = 0.0, 0, 0.0, 0
                        for c, (ids, (ref_lp, ref_idx)) in enumerate(
                            zip(chunks[d], ref[d])
                        ):
                            cache.key = (d, c)
                            q_lp, q_idx = _run(model, capture, ids, down)
                            kl_sum += _kl_sum(ref_lp, q_lp)
                            n_pred += ref_lp.shape[0]
                            for layer in down:
                                j = set_jaccard(ref_idx[layer], q_idx[layer])
                                dis_sum += float((1 - j).sum().item())
                            n_tok += ids.numel()
                        passes += len(chunks[d])
                        kl[di, ui, si] = kl_sum / max(n_pred, 1)
                        if down:
                            dis[di, ui, si] = dis_sum / (n_tok * len(down))
                bar.update(1)
        bar.close()
    return Measurement(
        domains=names,
        units=[u.name for u in units],
        schemes=[s.label for s in schemes],
        kl=kl,
        disagreement=dis,
        usage=usage,
        router_layers=layers,
        tokens={d: sum(c.numel() for c in chunks[d]) for d in names},
        forward_passes=passes,
        seconds=time.perf_counter() - start,
    )


def combine(
    m: Measurement, weights: dict[str, float], routing_weight: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Sensitivity [U, S] = sum_d w_d (KL_d + a * disagreement_d), and the
    per-domain tables [D, U, S]. ``routing_weight`` None: ``a`` makes both terms'
    weighted totals equal (each counts for half), 0 when no router moved."""
    w = torch.tensor([weights[d] for d in m.domains], dtype=torch.float64)
    kl = (w[:, None, None] * m.kl).sum(0)
    dis = (w[:, None, None] * m.disagreement).sum(0)
    if routing_weight is None:
        total = float(dis.sum())
        routing_weight = float(kl.sum()) / total if total > 0 else 0.0
    per_domain = m.kl + routing_weight * m.disagreement
    return kl + routing_weight * dis, per_domain, routing_weight
