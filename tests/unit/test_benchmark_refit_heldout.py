"""benchmarks/refit_heldout.py: the original router, run on the quantized model's
router input, on a shipped model whose one router was changed."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from refit_heldout import original_router_agreement  # noqa: E402

from vsraq_modifier import data  # noqa: E402
from vsraq_modifier.calibration import text_token_ids  # noqa: E402
from vsraq_modifier.metrics.loading import load_model  # noqa: E402
from vsraq_modifier.routers.registry import find_routers  # noqa: E402


@pytest.mark.parametrize("name", ["qwen3_moe", "deepseek_v3"])
def test_only_the_changed_router_differs_from_the_original(name: str) -> None:
    model_dir = data.shipped_model_dir(name)
    reference = load_model(model_dir).model
    changed = copy.deepcopy(reference)
    sites = find_routers(changed)
    first, second = sites[0], sites[1]
    g = torch.Generator().manual_seed(0)
    w = second.router.weight
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=g) * w.std() * 0.5)
    ids = text_token_ids(data.heldout_text_path(), model_dir)[:512]
    rows = {r["layer"]: r for r in original_router_agreement(
        reference, changed, ids, seq_len=256)}
    # the layers up to the changed router see the reference's inputs: the
    # original router there is the reference itself
    assert rows[first.layer]["refitted"] == rows[first.layer]["original"] == 1.0
    assert rows[second.layer]["original"] == 1.0
    assert rows[second.layer]["refitted"] < 0.95
    assert rows[second.layer]["gain"] == pytest.approx(
        rows[second.layer]["refitted"] - 1.0)
    # later routers are unchanged but their inputs moved: both agree the same
    later = sites[2].layer
    assert rows[later]["refitted"] == rows[later]["original"] < 1.0
    assert all(r["tokens"] == 512 for r in rows.values())
    # the gain's standard error: 0 where the two routers agree token by token
    assert rows[first.layer]["gain_se"] == rows[later]["gain_se"] == 0.0
    assert 0 < rows[second.layer]["gain_se"] < abs(rows[second.layer]["gain"])
