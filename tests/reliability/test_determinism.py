"""Same seed, data and options: the same checkpoint bytes, on both hosts, for mse
and vsraq (tiny Qwen3-MoE, 4 samples x 32 tokens, CPU, one torch thread).

Every file of the checkpoint is compared byte for byte (weights, configs,
tokenizer, llm-compressor's recipe.yaml): no timestamp or path is written into
them, and the staging directory's random name (``output.py``) leaves no trace.
Measured also for the AutoRound path across processes (PYTHONHASHSEED 1 vs 7) and
with 2 threads: identical. Not promised across thread counts on larger models or
across machines (float summation order), see docs/errors.md.
To show the runs really differ where they should, mse and vsraq must give
different weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.helpers.autoround import RUN, calib_ids, small_moe, tiny_tokenizer

pytestmark = pytest.mark.slow


def _digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert files, f"no checkpoint under {root}"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
    }


def _weights(digests: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in digests.items() if k.endswith(".safetensors")}


@pytest.mark.usefixtures("host_env")
def test_autoround_api_same_seed_same_bytes():
    from vsraq_modifier.integrations.autoround import autoround

    def run(loss: str, out: str, seed: int = 42) -> dict[str, str]:
        ar = autoround(
            small_moe(),
            tiny_tokenizer(),
            loss=loss,
            dataset=calib_ids(RUN["nsamples"]),
            iters=3,
            seed=seed,
            not_use_best_mse=True,  # keep every step's result: paths may differ
            **RUN,
        )
        _, folder = ar.quantize_and_save(out, format="auto_round")
        return _digests(Path(folder))

    first = {loss: run(loss, f"{loss}-a") for loss in ("mse", "vsraq")}
    for loss in ("mse", "vsraq"):
        assert run(loss, f"{loss}-b") == first[loss], loss
    # the settings are sensitive enough to tell runs apart: another option and
    # another seed each give other bytes (at a few iterations AutoRound can keep
    # iteration 0 everywhere, and then every run looks "deterministic")
    assert _weights(first["mse"]) != _weights(first["vsraq"])
    assert _weights(run("mse", "mse-seed", seed=43)) != _weights(first["mse"])


@pytest.mark.usefixtures("llmc_env")
def test_llmcompressor_oneshot_same_bytes(checkpoints, tmp_path):
    from tests.helpers.llmcompressor import (
        load,
        modifier_args,
        run_oneshot,
        tiny_checkpoint,
        token_ids,
    )
    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier.output import staged_output

    path = tiny_checkpoint("qwen3_moe", checkpoints / "det", num_hidden_layers=2)

    def run(loss: str, out: Path) -> dict[str, str]:
        model = load(path)
        args = modifier_args(loss=loss, iters=4, lr=5e-3, batch_size=4)
        ids = token_ids(model.config.vocab_size, n=4)
        with staged_output(out) as stage:  # the documented way to save safely
            run_oneshot(model, VSRAQModifier(**args), ids, output_dir=str(stage))
        return _digests(out)

    first = {loss: run(loss, tmp_path / f"{loss}-a") for loss in ("mse", "vsraq")}
    for loss in ("mse", "vsraq"):
        assert run(loss, tmp_path / f"{loss}-b") == first[loss], loss
    assert _weights(first["mse"]) != _weights(first["vsraq"])
