"""Synthetic benchmark cells (the JSON ``benchmarks/run.py`` writes per cell), for
the report tests: only the fields the reports read."""

from __future__ import annotations


def cell(method: str, seed: int, *, dis: float, ppl: float, kl: float,
         scheme: str = "W2A16G64", cpu: float = 1.0, oracle: float | None = None,
         layers: tuple = (), refit: dict | None = None) -> dict:
    """One cell: routing disagreement ``dis``, perplexity (``oracle``: with the
    reference's expert choice), KL, quantization time, per-layer Jaccard and the
    per-block re-fit summaries."""
    return {
        "method": method,
        "scheme": scheme,
        "seed": seed,
        "eval": {
            "mean_jaccard": 1.0 - dis,
            "perplexity": ppl,
            "oracle_perplexity": ppl if oracle is None else oracle,
            "reference_perplexity": 50.0,
            "kl": kl,
            "layers": [{"layer": i, "jaccard": j} for i, j in layers],
        },
        "quantization": {"seconds": cpu, "cpu_seconds": cpu},
        "peak_rss_quant_mb": 1000.0,
        "blocks": [{"refit": refit}] if refit else [],
    }
