"""routing.png: layer-wise Jaccard per quantized model (like the paper's Figure 1)
and a perplexity panel (reference, each model, oracle routing when measured).

Drawn on a bare matplotlib ``Figure`` (rendered by Agg, pyplot untouched): no
display needed and no global backend switched.
"""

from __future__ import annotations

import math
from pathlib import Path

from vsraq_modifier.metrics.results import RoutingReport

__all__ = ["plot_report"]


def plot_report(report: RoutingReport, path: str | Path) -> Path:
    """Write the two-panel figure to ``path`` (PNG) and return the path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_j, ax_p = fig.subplots(1, 2, width_ratios=[3, 2])
    for model in report.models:
        layers = [m.layer for m in model.layers]
        ax_j.plot(
            layers,
            [m.jaccard for m in model.layers],
            marker="o",
            label=f"{model.label} ({model.mean('jaccard'):.3f})",
        )
    ax_j.set_xlabel("decoder layer")
    ax_j.set_ylabel("Jaccard of top-k sets vs reference")
    ax_j.set_title(f"Routing agreement ({report.tokens} tokens)")
    all_layers = sorted({m.layer for model in report.models for m in model.layers})
    if all_layers and len(all_layers) <= 32:
        ax_j.set_xticks(all_layers)
    ax_j.grid(alpha=0.3)
    if report.models:
        ax_j.legend(fontsize="small", title="model (mean)")

    labels = [m.label for m in report.models]
    x = range(len(labels))
    has_oracle = any(m.oracle_perplexity is not None for m in report.models)
    width = 0.4 if has_oracle else 0.6
    offset = width / 2 if has_oracle else 0.0
    ax_p.bar(
        [i - offset for i in x],
        [m.perplexity for m in report.models],
        width=width,
        label="quantized",
    )
    if has_oracle:
        oracle = [
            m.oracle_perplexity if m.oracle_perplexity is not None else math.nan
            for m in report.models
        ]
        ax_p.bar([i + offset for i in x], oracle, width=width, label="oracle routing")
    ax_p.axhline(
        report.reference_perplexity,
        color="black",
        linestyle="--",
        label=f"reference ({report.reference_perplexity:.2f})",
    )
    ax_p.set_xticks(list(x), labels, rotation=20, ha="right")
    ax_p.set_ylabel("perplexity")
    ax_p.set_title("Perplexity")
    values = [report.reference_perplexity] + [m.perplexity for m in report.models]
    if has_oracle:
        values += [
            m.oracle_perplexity
            for m in report.models
            if m.oracle_perplexity is not None
        ]
    finite = [v for v in values if math.isfinite(v)]
    if finite:  # zoom on the differences, which are small next to the level
        lo, hi = min(finite), max(finite)
        pad = max((hi - lo) * 0.5, hi * 0.01)
        ax_p.set_ylim(max(0.0, lo - pad), hi + pad)
    ax_p.legend(fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
