"""The routing report's data: what ``vsraq report`` writes to routing.json and prints.

JSON shape (issue 6; extra keys allowed)::

    {"tokens": int, "reference_perplexity": float,
     "models": [{"label": str, "path": str, "mean_jaccard": float,
                 "mean_exact_match": float, "mean_top1_agreement": float,
                 "perplexity": float, "kl": float,
                 "layers": [{"layer": int, "jaccard": float, "exact_match": float,
                             "top1_agreement": float, "weight_overlap": float}]}]}

Added keys: ``predicted_tokens``, ``seq_len``, ``reference_path``, ``reference_dtype``;
per model ``dtype``, ``mean_weight_overlap``, ``oracle_perplexity`` (with --oracle)
and per layer ``tokens``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from vsraq_modifier.metrics.agreement import LayerMetrics

__all__ = ["ModelEvaluation", "RoutingReport", "format_table"]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass
class ModelEvaluation:
    """One quantized model against the reference, on the same token ids."""

    label: str
    path: str
    dtype: str
    perplexity: float
    kl: float
    layers: list[LayerMetrics]
    oracle_perplexity: float | None = None

    def mean(self, metric: str) -> float:
        """Mean over MoE layers (every layer sees the same tokens)."""
        return _mean([getattr(m, metric) for m in self.layers])

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "label": self.label,
            "path": self.path,
            "dtype": self.dtype,
            "mean_jaccard": self.mean("jaccard"),
            "mean_exact_match": self.mean("exact_match"),
            "mean_top1_agreement": self.mean("top1_agreement"),
            "mean_weight_overlap": self.mean("weight_overlap"),
            "perplexity": self.perplexity,
            "kl": self.kl,
            "layers": [m.to_dict() for m in self.layers],
        }
        if self.oracle_perplexity is not None:
            out["oracle_perplexity"] = self.oracle_perplexity
        return out


@dataclass
class RoutingReport:
    """Reference perplexity and every quantized model's evaluation.

    ``tokens``: token positions routed (each MoE layer sees all of them);
    ``predicted_tokens``: positions that predict a next token (perplexity, KL).
    """

    tokens: int
    predicted_tokens: int
    seq_len: int
    reference_path: str
    reference_dtype: str
    reference_perplexity: float
    models: list[ModelEvaluation] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "tokens": self.tokens,
            "predicted_tokens": self.predicted_tokens,
            "seq_len": self.seq_len,
            "reference_path": self.reference_path,
            "reference_dtype": self.reference_dtype,
            "reference_perplexity": self.reference_perplexity,
            "models": [m.to_dict() for m in self.models],
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    return f"{x:.{digits}f}" if abs(x) < 1e5 else f"{x:.3e}"


def format_table(report: RoutingReport) -> str:
    """Plain-text summary: one row per model, then per-layer Jaccard."""
    header = [
        "model",
        "dtype",
        "jaccard",
        "exact",
        "top1",
        "w_overlap",
        "ppl",
        "oracle_ppl",
        "kl",
    ]
    rows = [
        [
            "reference",
            report.reference_dtype,
            "1",
            "1",
            "1",
            "1",
            _fmt(report.reference_perplexity, 3),
            "-",
            "0",
        ]
    ]
    for m in report.models:
        rows.append(
            [
                m.label,
                m.dtype,
                _fmt(m.mean("jaccard")),
                _fmt(m.mean("exact_match")),
                _fmt(m.mean("top1_agreement")),
                _fmt(m.mean("weight_overlap")),
                _fmt(m.perplexity, 3),
                _fmt(m.oracle_perplexity, 3),
                _fmt(m.kl, 5),
            ]
        )
    lines = [
        f"{report.tokens} tokens ({report.predicted_tokens} predicted), "
        f"chunks of {report.seq_len}; reference {report.reference_path}",
        *_align([header, *rows]),
    ]
    layer_ids = sorted({m.layer for model in report.models for m in model.layers})
    if layer_ids:
        lines.append("")
        lines.append("Jaccard per MoE layer (decoder layer index):")
        table = [["model", *map(str, layer_ids)]]
        for model in report.models:
            by_layer = {m.layer: m.jaccard for m in model.layers}
            table.append([model.label, *(_fmt(by_layer.get(i)) for i in layer_ids)])
        lines.extend(_align(table))
    return "\n".join(lines)


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths))
        ]
        out.append("  ".join(cells))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
