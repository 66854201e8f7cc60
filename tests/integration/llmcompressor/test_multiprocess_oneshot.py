"""``oneshot`` with ``VSRAQModifier`` under ``torchrun --nproc-per-node 2`` (gloo,
CPU): it finishes, every rank tunes on its own samples with the routing loss and
the same normalisers, and every rank ends with the same quantized weights; then
the two-rank checkpoints against single-process ``oneshot`` on the same model
(docs/llm-compressor.md, "Several processes"). The test runs this file as the
torchrun worker."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
#: calibration samples of the run (each rank's own shard: half of them)
SAMPLES = 4
ITERS = 8


def test_autoround_ddp_seam_still_offered():
    """``seams.cpu_ddp_wrapping`` replaces this function for the tuning call."""
    from auto_round.algorithms.quantization.sign_round import quantizer as host

    params = list(inspect.signature(host.setup_ddp_if_needed_).parameters)
    assert params == ["ar", "block", "device_list"]


def _digest(state: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _recipe() -> Any:
    from tests.helpers.llmcompressor import modifier_args
    from vsraq_modifier import VSRAQModifier

    # the step cap is not applied under torch.distributed (DDP does not support
    # torch.autograd.grad); switched off in both runs so they compare
    return VSRAQModifier(
        **modifier_args("W4A16", loss="vsraq", iters=ITERS), max_flip_share=1.0
    )


def _torchrun(out: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += [__file__, str(out)]
    proc = subprocess.Popen(
        cmd,
        cwd=out,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a hung rank is killed with its launcher
    )
    try:
        log, _ = proc.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("torchrun did not finish in 200 s:\n" + log[-3000:])
    assert proc.returncode == 0, log[-3000:]
    return log


def _single_process(fp: Path, ids: Any) -> tuple[dict, dict]:
    """Single-process ``oneshot`` on ``ids`` (one thread, as each rank): its
    state dict and what :func:`_run` records."""
    import torch

    from tests.helpers.llmcompressor import load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load(fp)
        got = _run(model, ids)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}, got
    finally:
        torch.set_num_threads(threads)


def _same_weights(a: dict, b: dict) -> float:
    """The fraction of the quantized layers' weight entries equal in a and b."""
    import torch

    keys = [k for k in a if k.endswith(".weight") and k[:-6] + "weight_scale" in a]
    same = sum(int(torch.eq(a[k], b[k]).sum()) for k in keys)
    return same / sum(a[k].numel() for k in keys)


def test_two_ranks_one_model_and_the_single_process_runs(tmp_path):
    import torch

    from tests.helpers.llmcompressor import token_ids

    _torchrun(tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    own = [rank["own"] for rank in ranks]
    assert own[0]["weights"] == own[1]["weights"]  # one model on every rank
    # each rank tuned every layer with the routing terms, on its own samples ...
    for rank in own:
        assert [layer for layer, _ in rank["value_terms"]] == [0, 1, 2]
        assert all(v > 0 for _, v in rank["value_terms"])
    assert own[0]["value_terms"] != own[1]["value_terms"]
    # ... with the same normalisers (averaged over the ranks)
    assert own[0]["normalisers"] == own[1]["normalisers"]
    assert [layer for layer, _ in own[0]["normalisers"]] == [0, 1, 2]
    saved = tmp_path / "quantized"
    assert (saved / "config.json").exists() and list(saved.glob("*.safetensors"))

    # the same dataset on every rank: llm-compressor 0.14.0.1 calibrates every
    # rank on the first SAMPLES / 2 samples. Layers 0 and 1 are tuned exactly as
    # single-process oneshot on those samples tunes them (every host loss, kept
    # iteration and routing term bit for bit), layer 0 ends bit for bit the same;
    # from layer 1's result on the checkpoints part (docs: measured, not
    # explained)
    shared = [rank["shared"] for rank in ranks]
    assert shared[0]["weights"] == shared[1]["weights"]
    fp = tmp_path / "fp" / "qwen3_moe"
    vocab = json.loads((fp / "config.json").read_text())["vocab_size"]
    ids = token_ids(vocab, n=SAMPLES)
    first_half, single = _single_process(fp, ids[: SAMPLES // 2])
    for rank in shared:
        assert rank["tuning"][:2] == single["tuning"][:2]
    shared_state = torch.load(tmp_path / "shared_state.pt")
    layer0 = [k for k in first_half if k.startswith("model.layers.0.")]
    assert all(torch.equal(shared_state[k], first_half[k]) for k in layer0)
    same_half = _same_weights(shared_state, first_half)

    # own shards against single-process oneshot on all the samples: another
    # checkpoint (each step averages two 2-sample gradients instead of taking
    # one 4-sample gradient, and the kept iteration is judged on rank 0's half)
    everything, _ = _single_process(fp, ids)
    two_ranks = torch.load(tmp_path / "own_state.pt")
    assert _digest(everything) != own[0]["weights"]
    same_all = _same_weights(two_ranks, everything)
    print(
        "quantized weight entries equal: same dataset on two ranks vs one process "
        f"on the first half {same_half:.3f}; own shards vs one process on all "
        f"{same_all:.3f}; one process, first half vs all "
        f"{_same_weights(first_half, everything):.3f}"
    )
    assert 0.2 < same_all < 1.0


def _run(model: Any, ids: Any) -> dict[str, Any]:
    """``oneshot`` on this rank; its weights' hash, and per layer the value
    term's start value and the objective's normalisers."""
    from tests.helpers.llmcompressor import run_oneshot
    from vsraq_modifier.session.block import BlockSession
    from vsraq_modifier.session.block_report import BlockReport

    terms: list[tuple[int, float]] = []
    tuning: list[list] = []
    norms: list[tuple[int, dict[str, float]]] = []
    finish = BlockSession.finish

    def keep(self: BlockSession) -> BlockReport:
        report = finish(self)
        terms.append((report.layer, report.terms_first["value"]))
        tuning.append(
            [report.layer, report.host_first, report.host_last, report.kept_iter]
            + sorted(report.terms_first.items())
        )
        got = self.objective.normalisers.items()
        norms.append((report.layer, {f"{i}/{n}": v for (i, n), v in got}))
        return report

    BlockSession.finish = keep  # this worker process only
    try:
        run_oneshot(model, _recipe(), ids)
    finally:
        BlockSession.finish = finish
    digest = _digest(model.state_dict())
    return {
        "weights": digest,
        "value_terms": terms,
        "normalisers": norms,
        "tuning": json.loads(json.dumps(tuning)),  # tuples as in the rank files
    }


def _worker(out: Path) -> None:
    import torch
    import torch.distributed as dist

    from tests.helpers.llmcompressor import load, tiny_checkpoint, token_ids

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank == 0:
        tiny_checkpoint("qwen3_moe", out / "fp")
    dist.barrier()
    fp = tiny_checkpoint("qwen3_moe", out / "fp")
    model = load(fp)
    ids = token_ids(model.config.vocab_size, n=SAMPLES)
    half = SAMPLES // 2
    # each rank its own samples (llm-compressor 0.14.0.1's own partition of a
    # shared dataset gives every rank the same first samples; see the docs)
    own = _run(model, ids[half * rank : half * (rank + 1)])
    if rank == 0:
        torch.save(model.state_dict(), out / "own_state.pt")
    # collective in llm-compressor (barriers around it): every rank calls it,
    # rank 0 writes
    model.save_pretrained(out / "quantized", save_compressed=True)
    # the same dataset on every rank, partitioned by llm-compressor
    shared_model = load(fp)
    shared = _run(shared_model, ids)
    if rank == 0:
        torch.save(shared_model.state_dict(), out / "shared_state.pt")
    result = {"own": own, "shared": shared}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
