"""Routing agreement between a reference and a quantized model (pure torch).

The definitions are the project's (notes/objective.md, "Metrics"), shared by the
tests, ``vsraq report`` and the benchmark. Per MoE layer and token, with S* / S the
reference / quantized top-k sets:

- jaccard: |S ∩ S*| / |S ∪ S*|
- exact_match: 1 if S = S*
- top1_agreement: 1 if the first experts agree; the first expert is the selected
  expert with the highest selection score, so routers whose top-k is unsorted
  (DeepSeek-V3 family) are read correctly
- weight_overlap: sum_e min(g_e, g*_e), each model's routing weights over its own
  selected experts normalised to sum 1 (computed as 1 - |g - g*|_1 / 2, the same
  number, exactly 1.0 when the weights are equal); where a router's own weights
  are undefined (0/0 or inf: selected sigmoid scores that all underflow, inf
  logits) its selected experts count equally

:class:`RoutingAccumulator` sums these over chunks of tokens (float64) so that one
implementation serves a single batch and a stream of evaluation chunks alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from vsraq_modifier.routing import Routing

__all__ = [
    "METRIC_NAMES",
    "LayerMetrics",
    "RoutingAccumulator",
    "first_expert",
    "layer_metrics",
    "normalised_weights",
    "token_metrics",
]

#: per-token metrics, in the order they are reported
METRIC_NAMES = ("jaccard", "exact_match", "top1_agreement", "weight_overlap")


@dataclass(frozen=True)
class LayerMetrics:
    """Mean per-token metrics of one MoE layer (``layer``: decoder layer index)."""

    layer: int
    tokens: int
    jaccard: float
    exact_match: float
    top1_agreement: float
    weight_overlap: float

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


def _indices(routing: Routing, scores: torch.Tensor) -> torch.Tensor:
    """Selected experts [T, k] (also for T = 0, where a -1 in reshape is ambiguous)."""
    return routing.indices.reshape(scores.shape[0], routing.indices.shape[-1])


def _selection_mask(routing: Routing) -> torch.Tensor:
    """Boolean [T, E]: the selected experts."""
    scores = routing.scores.reshape(-1, routing.scores.shape[-1])
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    return mask.scatter_(-1, _indices(routing, scores), True)


def first_expert(routing: Routing) -> torch.Tensor:
    """[T]: the selected expert with the highest selection score (ties: the one
    listed first, which is the model's own first expert when its top-k is sorted)."""
    scores = routing.scores.reshape(-1, routing.scores.shape[-1])
    indices = _indices(routing, scores)
    best = scores.gather(-1, indices).argmax(dim=-1, keepdim=True)
    return indices.gather(-1, best).squeeze(-1)


def normalised_weights(routing: Routing) -> torch.Tensor:
    """Dense [T, E] float64 routing weights over the selected experts, summing to 1
    per token (removes norm_topk_prob / routed_scaling_factor differences)."""
    scores = routing.scores.reshape(-1, routing.scores.shape[-1])
    indices = _indices(routing, scores)
    w = routing.weights.reshape(indices.shape).to(torch.float64)
    total = w.sum(dim=-1, keepdim=True)
    # a router whose own weights are 0/0 or inf (all selected sigmoid scores
    # underflowed, inf logits): its experts' share is undefined; count them equally
    degenerate = ~torch.isfinite(total) | (total <= 0)
    w = torch.where(degenerate, torch.ones_like(w), w)
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    dense = torch.zeros(scores.shape, dtype=torch.float64, device=scores.device)
    return dense.scatter_(-1, indices, w)


def _check_pair(reference: Routing, quantized: Routing) -> None:
    rs, qs = reference.scores.shape, quantized.scores.shape
    if rs[-1] != qs[-1] or reference.scores.numel() != quantized.scores.numel():
        raise ValueError(
            f"reference routing {tuple(rs)} and quantized routing {tuple(qs)} do not "
            "cover the same tokens and experts; run both models on the same token ids"
        )


def token_metrics(reference: Routing, quantized: Routing) -> dict[str, torch.Tensor]:
    """Per-token values [T] (float64) of every metric in :data:`METRIC_NAMES`."""
    _check_pair(reference, quantized)
    device = reference.scores.device
    ref_set = _selection_mask(reference)
    q_set = _selection_mask(quantized).to(device)
    inter = (ref_set & q_set).sum(-1).to(torch.float64)
    union = (ref_set | q_set).sum(-1).to(torch.float64)
    top1 = first_expert(reference) == first_expert(quantized).to(device)
    overlap_l1 = (
        (normalised_weights(reference) - normalised_weights(quantized).to(device))
        .abs()
        .sum(-1)
    )
    return {
        "jaccard": inter / union,
        "exact_match": (ref_set == q_set).all(-1).to(torch.float64),
        "top1_agreement": top1.to(torch.float64),
        # disjoint sets: |g - g*|_1 = 2 up to rounding, which could dip below 0
        "weight_overlap": (1.0 - 0.5 * overlap_l1).clamp(0.0, 1.0),
    }


class RoutingAccumulator:
    """Streaming per-layer sums of the token metrics; :meth:`result` gives means.

    ``update(layer, reference, quantized, mask)`` adds one chunk of tokens; ``mask``
    (bool [T], optional) keeps only the valid tokens (padding excluded).
    """

    def __init__(self) -> None:
        self._sums: dict[int, dict[str, float]] = {}
        self._tokens: dict[int, int] = {}

    def update(
        self,
        layer: int,
        reference: Routing,
        quantized: Routing,
        mask: torch.Tensor | None = None,
    ) -> None:
        values = token_metrics(reference, quantized)
        if mask is not None:
            keep = mask.reshape(-1).to(torch.bool).to(values["jaccard"].device)
            if keep.numel() != values["jaccard"].numel():
                raise ValueError(
                    f"mask has {keep.numel()} entries for "
                    f"{values['jaccard'].numel()} routed tokens"
                )
            values = {k: v[keep] for k, v in values.items()}
        sums = self._sums.setdefault(layer, dict.fromkeys(METRIC_NAMES, 0.0))
        for name, v in values.items():
            sums[name] += float(v.sum().item())
        self._tokens[layer] = self._tokens.get(layer, 0) + int(
            values["jaccard"].numel()
        )

    @property
    def layers(self) -> list[int]:
        return sorted(self._sums)

    def result(self) -> list[LayerMetrics]:
        """Mean metrics per layer, in layer order (layers with no token: NaN)."""
        out = []
        for layer in self.layers:
            n = self._tokens[layer]
            means = {
                k: (s / n if n else float("nan")) for k, s in self._sums[layer].items()
            }
            out.append(LayerMetrics(layer=layer, tokens=n, **means))
        return out


def layer_metrics(
    reference: Routing,
    quantized: Routing,
    layer: int = 0,
    mask: torch.Tensor | None = None,
) -> LayerMetrics:
    """The metrics of one layer on one batch of tokens."""
    acc = RoutingAccumulator()
    acc.update(layer, reference, quantized, mask)
    return acc.result()[0]
