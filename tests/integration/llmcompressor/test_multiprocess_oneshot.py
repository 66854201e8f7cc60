"""``oneshot`` with ``VSRAQModifier`` under ``torchrun --nproc-per-node 2`` (gloo,
CPU): it finishes, every rank tunes on its own samples with the routing loss, and
every rank ends with the same quantized weights (docs/llm-compressor.md, "Several
processes"). The test runs this file as the torchrun worker."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]


def test_autoround_ddp_seam_still_offered():
    """``seams.cpu_ddp_wrapping`` replaces this function for the tuning call."""
    from auto_round.algorithms.quantization.sign_round import quantizer as host

    params = list(inspect.signature(host.setup_ddp_if_needed_).parameters)
    assert params == ["ar", "block", "device_list"]


def test_two_ranks_one_model(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += [__file__, str(tmp_path)]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a hung rank is killed with its launcher
    )
    try:
        log, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("torchrun did not finish in 150 s:\n" + log[-3000:])
    assert proc.returncode == 0, log[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # one model on every rank
    # each rank tuned every layer with the routing terms, on its own samples
    for rank in ranks:
        assert [layer for layer, _ in rank["value_terms"]] == [0, 1, 2]
        assert all(v > 0 for _, v in rank["value_terms"])
    assert ranks[0]["value_terms"] != ranks[1]["value_terms"]
    saved = tmp_path / "quantized"
    assert (saved / "config.json").exists() and list(saved.glob("*.safetensors"))


def _worker(out: Path) -> None:
    import torch
    import torch.distributed as dist

    from tests.helpers.llmcompressor import (
        load,
        modifier_args,
        run_oneshot,
        tiny_checkpoint,
        token_ids,
    )
    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier.session.block import BlockSession
    from vsraq_modifier.session.block_report import BlockReport

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank == 0:
        tiny_checkpoint("qwen3_moe", out / "fp")
    dist.barrier()
    model = load(tiny_checkpoint("qwen3_moe", out / "fp"))
    # each rank its own samples (llm-compressor 0.14.0.1's own partition of a
    # shared dataset gives every rank the same first samples; see the docs)
    ids = token_ids(model.config.vocab_size, n=4)[2 * rank : 2 * rank + 2]
    recipe = VSRAQModifier(**modifier_args("W4A16", loss="vsraq", iters=8))
    terms: list[tuple[int, float]] = []
    finish = BlockSession.finish

    def keep(self: BlockSession) -> BlockReport:
        report = finish(self)
        terms.append((report.layer, report.terms_first["value"]))
        return report

    BlockSession.finish = keep  # this worker process only
    run_oneshot(model, recipe, ids)
    state = model.state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].detach().float().contiguous().numpy().tobytes())
    result = {"weights": digest.hexdigest(), "value_terms": terms}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    # collective in llm-compressor (barriers around it): every rank calls it,
    # rank 0 writes
    model.save_pretrained(out / "quantized", save_compressed=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
