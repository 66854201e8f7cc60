"""Routing metrics and the end-to-end routing evaluation (torch only; no host import).

``routing``: per-layer agreement of two routers' decisions (the project's metric
definitions); ``hooks``: read or force routers during a forward pass; ``evaluate``:
reference vs quantized models on the same token ids; ``results``: the report data.
Checkpoint loading (``loading``) and the plot (``plot``) are imported on demand.
"""

from vsraq_modifier.metrics.agreement import (
    METRIC_NAMES,
    LayerMetrics,
    RoutingAccumulator,
    first_expert,
    layer_metrics,
    normalised_weights,
    token_metrics,
)
from vsraq_modifier.metrics.evaluate import (
    chunk_token_ids,
    evaluate_model,
    evaluate_routing,
    model_dtype,
)
from vsraq_modifier.metrics.hooks import (
    RouterForcing,
    RouterNotCalledError,
    RoutingCapture,
)
from vsraq_modifier.metrics.results import ModelEvaluation, RoutingReport, format_table

__all__ = [
    "METRIC_NAMES",
    "LayerMetrics",
    "ModelEvaluation",
    "RouterForcing",
    "RouterNotCalledError",
    "RoutingAccumulator",
    "RoutingCapture",
    "RoutingReport",
    "chunk_token_ids",
    "evaluate_model",
    "evaluate_routing",
    "first_expert",
    "format_table",
    "layer_metrics",
    "model_dtype",
    "normalised_weights",
    "token_metrics",
]
