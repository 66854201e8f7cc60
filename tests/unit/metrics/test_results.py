"""The routing report's data: per-model means, the routing.json shape the docs
promise, and the printed table."""

from __future__ import annotations

import json
import math

from vsraq_modifier.metrics.agreement import LayerMetrics
from vsraq_modifier.metrics.results import ModelEvaluation, RoutingReport, format_table


def _model(label: str, jaccards: list[float], oracle: float | None = None):
    layers = [
        LayerMetrics(i, 10, j, j / 2, 1.0, 0.5) for i, j in enumerate(jaccards, 1)
    ]
    return ModelEvaluation(
        label, f"/ckpt/{label}", "float32", 12.5, 0.01, layers, oracle
    )


def _report(*models: ModelEvaluation) -> RoutingReport:
    return RoutingReport(10, 9, 5, "/ref", "bfloat16", 11.0, list(models))


def test_means_and_json_shape(tmp_path) -> None:
    model = _model("vsraq", [0.5, 1.0], oracle=11.5)
    assert model.mean("jaccard") == 0.75 and model.mean("exact_match") == 0.375
    assert math.isnan(_model("empty", []).mean("jaccard"))
    data = json.loads(_report(model).write_json(tmp_path / "r.json").read_text())
    assert {"tokens", "predicted_tokens", "seq_len", "reference_perplexity"} <= set(
        data
    )
    (m,) = data["models"]
    assert (m["mean_jaccard"], m["oracle_perplexity"], m["kl"]) == (0.75, 11.5, 0.01)
    assert m["layers"][1] == {
        "layer": 2,
        "tokens": 10,
        "jaccard": 1.0,
        "exact_match": 0.5,
        "top1_agreement": 1.0,
        "weight_overlap": 0.5,
    }
    assert "oracle_perplexity" not in _model("mse", [1.0]).to_dict()


def test_table_rows_and_per_layer_jaccard() -> None:
    text = format_table(_report(_model("mse", [0.25, 0.5]), _model("vsraq", [1.0])))
    lines = text.splitlines()
    assert lines[0] == "10 tokens (9 predicted), chunks of 5; reference /ref"
    assert lines[1].split() == [
        "model", "dtype", "jaccard", "exact", "top1", "w_overlap", "ppl",
        "oracle_ppl", "kl",
    ]  # fmt: skip
    assert lines[3].split()[:3] == ["reference", "bfloat16", "1"]
    assert lines[4].split() == [
        "mse", "float32", "0.3750", "0.1875", "1.0000", "0.5000", "12.500", "-",
        "0.01000",
    ]  # fmt: skip
    assert "Jaccard per MoE layer (decoder layer index):" in lines
    assert lines[-1].split() == ["vsraq", "1.0000", "-"]  # no layer 2 for this one
    assert len({len(line) for line in lines[1:6]}) == 1  # aligned columns
