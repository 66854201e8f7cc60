"""End-to-end comparison of a reference and quantized models on the same token ids.

Each model runs on its own activations (every layer quantized together, as a user
runs it); the routers' decisions are read with forward hooks. The token ids are cut
into consecutive chunks of ``seq_len`` (no overlap, no context carried over, no
special tokens added); every position is routed, and every position but a chunk's
last predicts the next token (perplexity, KL). With ``oracle=True`` each quantized
model runs a third time with every router forced to the reference's expert choice.

Needs only torch and model objects with the transformers causal-LM interface; no
host framework is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from vsraq_modifier.metrics.agreement import RoutingAccumulator
from vsraq_modifier.metrics.hooks import RouterForcing, RoutingCapture
from vsraq_modifier.metrics.results import ModelEvaluation, RoutingReport
from vsraq_modifier.routers.base import RouterSite
from vsraq_modifier.routers.registry import find_routers
from vsraq_modifier.routing import Routing

__all__ = [
    "NextTokenStats",
    "chunk_token_ids",
    "evaluate_model",
    "evaluate_routing",
    "model_dtype",
]

#: a quantized model, or a function that loads it (so one is in memory at a time)
ModelSource = nn.Module | Callable[[], nn.Module]


def chunk_token_ids(
    token_ids: torch.Tensor | Sequence[int], seq_len: int
) -> list[torch.Tensor]:
    """Consecutive chunks [L] of at most ``seq_len`` ids; a last chunk shorter than
    2 tokens (nothing to predict) is dropped."""
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len}: a chunk needs at least 2 tokens")
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    chunks = [c for c in ids.split(seq_len) if c.numel() >= 2]
    if not chunks:
        raise ValueError(f"{ids.numel()} token ids: need at least 2 to evaluate")
    return chunks


def model_dtype(model: nn.Module) -> str:
    """The dtype the model computes in (its floating-point parameters): "float32"."""
    dtype = getattr(model, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        dtype = next(
            (p.dtype for p in model.parameters() if p.is_floating_point()), None
        )
    return str(dtype).removeprefix("torch.")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass
class NextTokenStats:
    """Running sums of next-token negative log-likelihood (and KL) over positions."""

    nll: float = 0.0
    kl: float = 0.0
    count: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.count) if self.count else float("nan")

    @property
    def mean_kl(self) -> float:
        return self.kl / self.count if self.count else float("nan")


def _log_probs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log-softmax [L, V] (float32) of the model's next-token logits for one chunk."""
    out = model(input_ids=ids.to(_device(model)).unsqueeze(0), use_cache=False)
    return torch.log_softmax(out.logits[0].float(), dim=-1)


def _nll(log_probs: torch.Tensor, ids: torch.Tensor) -> float:
    targets = ids[1:].to(log_probs.device)
    return float(-log_probs[:-1].gather(-1, targets[:, None]).sum().item())


def _kl(ref_lp: torch.Tensor, q_lp: torch.Tensor) -> float:
    """Sum over predicting positions of KL(reference || quantized)."""
    ref_lp, q_lp = ref_lp[:-1], q_lp[:-1].to(ref_lp.device)
    return float((ref_lp.exp() * (ref_lp - q_lp)).sum().item())


def _routers(model: nn.Module) -> list[RouterSite]:
    return find_routers(model)


def _check_same_routers(ref: list[RouterSite], q: list[RouterSite], label: str) -> None:
    a = [(s.layer, s.spec.num_experts, s.spec.top_k) for s in ref]
    b = [(s.layer, s.spec.num_experts, s.spec.top_k) for s in q]
    if a != b:
        raise ValueError(
            f"{label}: MoE routers (layer, experts, top_k) {b} differ from the "
            f"reference's {a}; compare checkpoints of the same model"
        )


def _on(routing: Routing, device: torch.device) -> Routing:
    if routing.scores.device == device:
        return routing
    return Routing(
        *(
            t.to(device)
            for t in (routing.logits, routing.scores, routing.indices, routing.weights)
        )
    )


@dataclass
class _PairRun:
    evaluation: ModelEvaluation
    reference: NextTokenStats
    tokens: int


def evaluate_model(
    reference: nn.Module,
    quantized: nn.Module,
    token_ids: torch.Tensor | Sequence[int],
    *,
    seq_len: int,
    label: str = "quantized",
    path: str = "",
    oracle: bool = False,
    progress: bool = True,
) -> tuple[ModelEvaluation, float]:
    """Compare ``quantized`` with ``reference``; returns the evaluation and the
    reference perplexity on the same positions."""
    run = _compare(
        reference,
        quantized,
        chunk_token_ids(token_ids, seq_len),
        label=label,
        path=path,
        oracle=oracle,
        progress=progress,
    )
    return run.evaluation, run.reference.perplexity


@torch.no_grad()
def _compare(
    reference: nn.Module,
    quantized: nn.Module,
    chunks: list[torch.Tensor],
    *,
    label: str,
    path: str,
    oracle: bool,
    progress: bool,
) -> _PairRun:
    ref_sites, q_sites = _routers(reference), _routers(quantized)
    _check_same_routers(ref_sites, q_sites, label)
    acc = RoutingAccumulator()
    ref_stats, q_stats, oracle_stats = (
        NextTokenStats(),
        NextTokenStats(),
        NextTokenStats(),
    )
    tokens = 0
    ref_cap, q_cap = RoutingCapture(ref_sites), RoutingCapture(q_sites)
    forcing = RouterForcing(q_sites)
    ref_device = _device(reference)
    for ids in tqdm(chunks, desc=label, unit="chunk", disable=not progress):
        with ref_cap:
            ref_cap.reset()
            ref_lp = _log_probs(reference, ids)
            ref_cap.check_called_once()
        with q_cap:
            q_cap.reset()
            q_lp = _log_probs(quantized, ids)
            q_cap.check_called_once()
        for layer, ref_routing in ref_cap.routings.items():
            acc.update(layer, ref_routing, _on(q_cap.routings[layer], ref_device))
        n_pred = ids.numel() - 1
        tokens += ids.numel()
        ref_stats.nll += _nll(ref_lp, ids)
        ref_stats.count += n_pred
        q_stats.nll += _nll(q_lp, ids)
        q_stats.kl += _kl(ref_lp, q_lp)
        q_stats.count += n_pred
        if oracle:
            forcing.targets = {k: r.indices for k, r in ref_cap.routings.items()}
            with forcing:
                forcing.reset()
                oracle_stats.nll += _nll(_log_probs(quantized, ids), ids)
                forcing.check_called_once()
            oracle_stats.count += n_pred
    evaluation = ModelEvaluation(
        label=label,
        path=path,
        dtype=model_dtype(quantized),
        perplexity=q_stats.perplexity,
        kl=q_stats.mean_kl,
        layers=acc.result(),
        oracle_perplexity=oracle_stats.perplexity if oracle else None,
    )
    return _PairRun(evaluation, ref_stats, tokens)


@torch.no_grad()
def _reference_only(
    reference: nn.Module, chunks: list[torch.Tensor], progress: bool
) -> NextTokenStats:
    stats = NextTokenStats()
    for ids in tqdm(chunks, desc="reference", unit="chunk", disable=not progress):
        stats.nll += _nll(_log_probs(reference, ids), ids)
        stats.count += ids.numel() - 1
    return stats


def evaluate_routing(
    reference: nn.Module,
    quantized: Iterable[tuple[str, str, ModelSource]],
    token_ids: torch.Tensor | Sequence[int],
    *,
    seq_len: int,
    reference_path: str = "",
    oracle: bool = False,
    progress: bool = True,
    release: bool = True,
) -> RoutingReport:
    """The full report: ``quantized`` yields (label, path, model or loader); loaders
    are called one at a time and, with ``release``, the model is dropped after use."""
    chunks = chunk_token_ids(token_ids, seq_len)
    tokens = sum(c.numel() for c in chunks)
    report = RoutingReport(
        tokens=tokens,
        predicted_tokens=tokens - len(chunks),
        seq_len=seq_len,
        reference_path=reference_path,
        reference_dtype=model_dtype(reference),
        reference_perplexity=float("nan"),
    )
    for label, path, source in quantized:
        model = source() if not isinstance(source, nn.Module) else source
        run = _compare(
            reference,
            model,
            chunks,
            label=label,
            path=path,
            oracle=oracle,
            progress=progress,
        )
        report.models.append(run.evaluation)
        report.reference_perplexity = run.reference.perplexity
        if release:
            del model
    if not report.models:
        report.reference_perplexity = _reference_only(
            reference, chunks, progress
        ).perplexity
    return report
