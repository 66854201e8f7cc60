"""All eight supported families quantize end to end with the routing loss through a
host: all eight through llm-compressor's ``oneshot`` with ``VSRAQModifier``, and
seven of them also through AutoRound's API (``autoround(...)``; AutoRound 0.15.1
fails on Nemotron-H's experts, pinned in
tests/integration/autoround/test_autoround_families.py). The family x
host table in docs/architectures.md is this file's outcome.

Each run must show, for every decoder layer up to the last router, a block report
whose routing terms ran (finite, positive value term) against the routers it must
see (its own, and the next one downstream), and experts whose weights were
actually rounded to the 4-bit grid.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.autoround import calib_ids, tiny_tokenizer
from tests.helpers.fixtures import (  # noqa: F401  (fixtures used below)
    cheap_gc,
    checkpoints,
    host_env,
    in_tmp_dir,
    llmc_env,
    llmcompressor_imported,
    restore_transformers_patches,
)
from tests.helpers.llmcompressor import (
    load,
    modifier_args,
    run_oneshot,
    tiny_checkpoint,
    token_ids,
)
from vsraq_modifier.routers import find_routers
from vsraq_modifier.routers.base import decoder_layers
from vsraq_modifier.session.block import BlockSession
from vsraq_modifier.session.block_report import BlockReport
from vsraq_modifier.testing import TINY_FAMILIES, tiny_model

#: family -> the hosts it runs through here (Nemotron-H: llm-compressor only)
HOSTS = {family: ("autoround", "llmcompressor") for family in TINY_FAMILIES}
HOSTS["nemotron_h"] = ("llmcompressor",)
AUTOROUND_RUN = dict(
    iters=1, nsamples=2, seqlen=32, batch_size=2, device_map="cpu", scheme="W4A16"
)


def test_every_family_has_a_host():
    assert set(HOSTS) == set(TINY_FAMILIES) and len(HOSTS) == 8
    assert all(HOSTS.values())


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[BlockReport]:
    """Every block report the run's sessions return (either host)."""
    seen: list[BlockReport] = []
    finish = BlockSession.finish

    def keep(self: BlockSession) -> BlockReport:
        report = finish(self)
        seen.append(report)
        return report

    monkeypatch.setattr(BlockSession, "finish", keep)
    return seen


def _expected_labels(layer: int, moe: list[int]) -> set[str]:
    labels = {f"L{layer}"} if layer in moe else set()
    later = [m for m in moe if m > layer]
    if later:
        labels.add(f"L{later[0]} (look-ahead)")
    return labels


def _check_reports(reports: list[BlockReport], moe: list[int], n_layers: int) -> None:
    tuned = [i for i in range(n_layers) if i <= moe[-1]]
    assert sorted(r.layer for r in reports) == tuned
    for r in reports:
        assert r.loss == "vsraq" and r.iters >= 1
        assert set(r.agreement_after) == _expected_labels(r.layer, moe), r.line()
        assert set(r.terms_first) == {"value", "structure"}, r.line()
        assert all(math.isfinite(v) for v in r.terms_first.values()), r.line()
        assert r.terms_first["value"] > 0, r.line()  # rounding moved the logits
        assert all(0.0 <= v <= 1.0 for v in r.agreement_after.values())
        assert r.reference_bytes > 0


def _check_rounded(model: torch.nn.Module, moe: list[int]) -> None:
    """Every MoE layer's expert linears are on a 4-bit grid: with llm-compressor's
    ``weight_scale`` (groups of 16), weight / scale is an integer in [-8, 7];
    AutoRound (groups of 128, wider than the tiny rows: one group per row) leaves
    at most 16 distinct values in each row of 32 or more."""
    layers = decoder_layers(model)
    for index in moe:
        linears = [
            m
            for name, m in layers[index].named_modules()
            if "experts" in name and isinstance(m, torch.nn.Linear)
        ]
        assert linears, f"layer {index}: no expert linears"
        for lin in linears:
            w = lin.weight.detach().float()
            assert w.shape[1] >= 32
            scale = getattr(lin, "weight_scale", None)
            if scale is None:
                assert max(row.unique().numel() for row in w) <= 16, index
                continue
            q = w.reshape(w.shape[0], scale.shape[1], -1) / scale.float()[..., None]
            assert (q - q.round()).abs().max() < 1e-3, index
            assert q.round().min() >= -8 and q.round().max() <= 7, index


@pytest.mark.usefixtures("host_env")
@pytest.mark.parametrize(
    "family", sorted(f for f, h in HOSTS.items() if "autoround" in h)
)
def test_family_through_autoround(family, reports):
    from vsraq_modifier.integrations.autoround import autoround

    model = tiny_model(family)
    moe = [s.layer for s in find_routers(model)]
    ar = autoround(
        model, tiny_tokenizer(), dataset=calib_ids(2), loss="vsraq", **AUTOROUND_RUN
    )
    quantized, _ = ar.quantize()
    _check_reports(reports, moe, len(decoder_layers(quantized)))
    _check_rounded(quantized, moe)


@pytest.mark.usefixtures("llmc_env")
@pytest.mark.parametrize(
    "family", sorted(f for f, h in HOSTS.items() if "llmcompressor" in h)
)
def test_family_through_llmcompressor(family, reports, checkpoints):  # noqa: F811
    from vsraq_modifier import VSRAQModifier

    model = load(tiny_checkpoint(family, checkpoints))
    moe = [s.layer for s in find_routers(model)]
    ids = token_ids(model.config.vocab_size, n=2)
    run_oneshot(model, VSRAQModifier(**modifier_args("W4A16", loss="vsraq")), ids)
    _check_reports(reports, moe, len(decoder_layers(model)))
    _check_rounded(model, moe)
