"""``vsraq refit`` end to end on a tiny Qwen3-MoE quantized by llm-compressor
(compressed-tensors W4A16, several shards): only the router tensors change, byte
for byte everything else is the input, the output reloads with the re-fitted
routers, and routing agreement with the reference does not drop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.refit import make_text, quantize, shard_tensors, tiny_checkpoint
from vsraq_modifier.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def refitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    ref = tiny_checkpoint(root / "ref")
    q = quantize(ref, root / "q")
    text = root / "cal.txt"
    text.write_text(make_text(6000, seed=3))
    out = root / "out"
    code = refit(ref, q, text, out)
    assert code == 0
    return ref, q, out, text


def refit(ref: Path, q: Path, text: Path, out: Path, nsamples: int = 24) -> int:
    """``vsraq refit`` with these tests' calibration (64-token rows); its exit code."""
    args = ["refit", "--reference", str(ref), "--quantized", str(q), "--dataset"]
    args += [str(text), "--nsamples", str(nsamples), "--seqlen", "64", "--no-progress"]
    return main([*args, "--out", str(out)])


def _routers(model) -> dict[int, torch.Tensor]:
    from vsraq_modifier.routers import find_routers

    return {s.layer: s.router.weight.detach().clone() for s in find_routers(model)}


def test_only_router_tensors_change(refitted):
    _, q, out, _ = refitted
    files = sorted(p.name for p in q.iterdir())
    assert sorted(p.name for p in out.iterdir()) == files
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 1
    changed, untouched_shards = set(), 0
    for name in files:
        a, b = (q / name).read_bytes(), (out / name).read_bytes()
        if not name.endswith(".safetensors"):
            assert a == b, name
            continue
        head_a, data_a = shard_tensors(q / name)
        head_b, data_b = shard_tensors(out / name)
        assert head_a == head_b and list(data_a) == list(data_b)  # order, metadata
        diff = {k for k in data_a if data_a[k] != data_b[k]}
        assert all(k.endswith("mlp.gate.weight") for k in diff), diff
        changed |= diff
        untouched_shards += a == b
    assert changed and untouched_shards  # a shard without routers stays identical


def test_output_reloads_with_the_refitted_routers(refitted):
    from vsraq_modifier.metrics.loading import load_model

    _, q, out, _ = refitted
    before = _routers(load_model(q).model)
    after = _routers(load_model(out).model)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_routing_agreement_does_not_drop(refitted, capsys):
    from vsraq_modifier.metrics import evaluate_routing
    from vsraq_modifier.metrics.loading import load_model, load_token_ids

    ref, q, out, text = refitted
    ids = load_token_ids(text, ref, 24 * 64)
    reference = load_model(ref).model
    report = evaluate_routing(
        reference,
        [(n, str(p), load_model(p).model) for n, p in (("q", q), ("out", out))],
        ids,
        seq_len=64,
        progress=False,
    )
    j = {
        m.label: sum(x.jaccard for x in m.layers) / len(m.layers) for m in report.models
    }
    assert j["out"] >= j["q"]


def test_summary_reports_each_router(tmp_path, refitted, capsys):
    ref, q, _, text = refitted
    code = refit(ref, q, text, tmp_path / "o2")
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].startswith("layer")
    rows = [ln.split() for ln in lines[1:] if ln.strip() and ln.split()[0].isdigit()]
    assert len(rows) == 3  # the tiny model's three MoE layers
    for r in rows:
        held_before, held_after = float(r[4]), float(r[6])
        assert (r[7] == "re-fit") == (held_after > held_before)


def test_fp4_checkpoint_is_refitted_with_its_experts_intact(tmp_path):
    """NVFP4 weights (compressed-tensors ``nvfp4-pack-quantized``): loaded through
    the reload fix (transformers alone drops the experts' global scales); only the
    routers change, and the output reloads with the re-fitted routers."""
    from vsraq_modifier.integrations.llmcompressor.reload import load_compressed

    ref = tiny_checkpoint(tmp_path / "ref")
    q = quantize(ref, tmp_path / "q", scheme="NVFP4A16", max_shard_size=None)
    text = tmp_path / "cal.txt"
    text.write_text(make_text(4000, seed=5))
    out = tmp_path / "out"
    assert refit(ref, q, text, out, nsamples=16) == 0
    _, data_q = shard_tensors(q / "model.safetensors")
    _, data_o = shard_tensors(out / "model.safetensors")
    diff = {k for k in data_q if data_q[k] != data_o[k]}
    assert diff and all(k.endswith("mlp.gate.weight") for k in diff)
    before = _routers(load_compressed(q))
    after = _routers(load_compressed(out))
    assert any(not torch.equal(before[k], after[k]) for k in before)
