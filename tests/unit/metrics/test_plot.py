"""routing.png is a real PNG of the figure's size, with and without oracle
perplexities, and for a report with no models."""

from __future__ import annotations

import struct

import pytest

from vsraq_modifier.metrics.agreement import LayerMetrics
from vsraq_modifier.metrics.plot import plot_report
from vsraq_modifier.metrics.results import ModelEvaluation, RoutingReport

PNG = b"\x89PNG\r\n\x1a\n"


def _report(oracle: float | None, models: int = 2) -> RoutingReport:
    evals = [
        ModelEvaluation(
            f"m{i}",
            "/p",
            "float32",
            12.0 + i,
            0.1,
            [LayerMetrics(layer, 4, 0.5, 0.5, 1.0, 0.5) for layer in (0, 2)],
            oracle if i else None,
        )
        for i in range(models)
    ]
    return RoutingReport(4, 3, 4, "/ref", "float32", 11.0, evals)


@pytest.mark.parametrize(("oracle", "models"), [(11.5, 2), (None, 2), (None, 0)])
def test_writes_a_png(tmp_path, oracle, models) -> None:
    path = plot_report(_report(oracle, models), tmp_path / "routing.png")
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])  # IHDR: 11 x 4.2 in at 120 dpi
    assert (width, height) == (1320, 504)
