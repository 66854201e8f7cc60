"""benchmarks/report_refit.py: the router re-alignment targets and the safeguard
check from synthetic cells (docs/results.md reports both)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import report_refit as rr  # noqa: E402

from tests.helpers.bench_cells import cell as bench_cell  # noqa: E402


def cell(method, seed, *, scheme="W4A16G64", **kw):
    return bench_cell(method, seed, scheme=scheme, **kw)


def _group(refit_dis: float, refit_cpu: float = 1.1, scheme="W4A16G64") -> list[dict]:
    cells = []
    for seed, noise in enumerate((0.0, 0.1, -0.1)):
        cells.append(cell("mse", seed, dis=0.10, ppl=52.0 + noise, kl=0.01,
                          scheme=scheme, oracle=51.0 + noise))
        cells.append(cell("vsraq", seed, dis=0.09, ppl=52.0 + noise, kl=0.01,
                          scheme=scheme))
        cells.append(cell("vsraq_refit", seed, dis=refit_dis, ppl=51.5 + noise,
                          kl=0.01, scheme=scheme, cpu=refit_cpu))
    return cells


def _row(rows: list[str], method: str) -> str:
    return next(r for r in rows if f"| {method} |" in r)


def test_routing_target_met_and_missed() -> None:
    met = _row(rr.target_rows({("qwen3_moe", "small"): _group(0.05)}), "vsraq_refit")
    assert "| 0.50x (<= 0.60x) | 0.56x |" in met and met.endswith("| yes |")
    missed = _row(rr.target_rows({("qwen3_moe", "small"): _group(0.08)}), "vsraq_refit")
    assert "0.80x (<= 0.60x)" in missed and missed.endswith("| no |")


def test_time_over_the_target_fails() -> None:
    row = _row(rr.target_rows({("qwen3_moe", "small"): _group(0.05, refit_cpu=1.3)}),
               "vsraq_refit")
    assert "| 1.30x |" in row and row.endswith("| no |")


def test_nvfp4_needs_half_of_the_oracle_gain() -> None:
    # mse's oracle gain is 1.0 perplexity; the re-fit recovers 0.5 of it
    row = _row(rr.target_rows({("qwen3_moe", "small"): _group(0.05, scheme="NVFP4")}),
               "vsraq_refit")
    assert "| 0.50 | yes |" in row
    no_gain = {
        ("mse", "NVFP4", 0): cell("mse", 0, dis=.1, ppl=52, kl=.01, oracle=52.5),
        ("vsraq_refit", "NVFP4", 0): cell("vsraq_refit", 0, dis=.1, ppl=51, kl=.01),
    }
    assert math.isnan(rr.oracle_recovered(no_gain, "vsraq_refit", "NVFP4")[0])


def test_safeguard_counts_routers_and_held_out_layers() -> None:
    fitted = ("fit error 1e-05 -> 5e-06, held-aside Jaccard 0.9800 -> 0.9850 "
              "(1000 tokens): re-fitted")
    kept = ("fit error 1e-05 -> 9e-06, held-aside Jaccard 0.9800 -> 0.9790 "
            "(1000 tokens): kept the original")
    cells = [
        cell("mse", 0, dis=.1, ppl=52, kl=.01),
        cell("vsraq", 0, dis=.1, ppl=52, kl=.01, layers=[(0, 0.95), (1, 0.90)]),
        cell("vsraq_refit", 0, dis=.1, ppl=52, kl=.01,
             layers=[(0, 0.96), (1, 0.89)], refit={"L0": fitted, "L1": kept}),
    ]
    row = _row(rr.safeguard_rows({("qwen3_moe", "small"): cells}), "vsraq_refit")
    assert row == ("| qwen3_moe | small | vsraq_refit | 1 / 1 | +0.0050 | 1 of 2 "
                   "| 0.0100 | - | - |")
    # the same-input check of benchmarks/refit_heldout.py, where a cell has it
    cells[2]["eval"]["original_router"] = [
        {"layer": 0, "gain": 0.004}, {"layer": 1, "gain": 0.0}]
    cells.append(cell("vsraq_refit", 1, dis=.1, ppl=52, kl=.01))
    cells[3]["eval"]["original_router"] = [
        {"layer": 0, "gain": -0.002}, {"layer": 1, "gain": 0.001}]
    row = _row(rr.safeguard_rows({("qwen3_moe", "small"): cells}), "vsraq_refit")
    assert row.endswith("| 1 of 4 | -0.0020 |")
    # with the held-out gain's standard error (cells since it is recorded), the
    # worst loss is also given in standard errors; the new log form still parses
    cells[3]["eval"]["original_router"][0]["gain_se"] = 0.0008
    cells[2]["blocks"][0]["refit"]["L0"] = fitted.replace("(1000", "(se 0.0020, 1000")
    row = _row(rr.safeguard_rows({("qwen3_moe", "small"): cells}), "vsraq_refit")
    assert row.endswith("| 1 / 1 | +0.0050 | 1 of 2 | 0.0100 | 1 of 4 | -0.0020 (-2.5 se) |")


def _command(kind: str, seed: int, before: tuple, after: tuple, fitted="6 of 6"):
    def ev(j, p, k):
        return {"mean_jaccard": j, "perplexity": p, "kl": k}

    return {"kind": kind, "model": "qwen3_moe", "seed": seed,
            "before": ev(*before), "after": ev(*after), "refit_cpu_seconds": 80.0,
            "summary": [f"wrote out ({fitted} routers re-fitted)"]}


def test_command_rows_pair_by_seed_and_check_the_target() -> None:
    good = [_command("gptq", s, (0.98, 100 + s, 0.002), (0.985, 100 + s - 0.01, 0.0018))
            for s in range(3)]
    row = _row(rr.command_rows(good), "GPTQModifier")
    assert "| 3 | 0.75x (0.75, 0.75, 0.75) |" in row
    assert "-0.010 (sd 1.000)" in row and "-10%, -10%, -10%" in row
    assert "| 6/6, 6/6, 6/6 |" in row and row.endswith("| yes |")
    # one seed routes worse after the re-fit: the target is missed
    bad = good[:2] + [_command("gptq", 2, (0.98, 102, 0.002), (0.97, 102, 0.002))]
    assert _row(rr.command_rows(bad), "GPTQModifier").endswith("| no |")
    # perplexity up by more than the checkpoint's spread over seeds
    costly = [_command("rtn", s, (0.98, 100.0 + s / 100, 0.002), (0.99, 100.5, 0.002))
              for s in range(3)]
    row = _row(rr.command_rows(costly), "QuantizationModifier (round-to-nearest)")
    assert row.endswith("| no |")


def test_command_cells_read_the_seed_from_the_folder(tmp_path: Path) -> None:
    import json

    d = tmp_path / "refit-command-n32x256-s2-deepseek_v3-heldout-e16384"
    d.mkdir()
    rec = _command("rtn", 0, (0.9, 1, 1), (0.9, 1, 1))
    del rec["seed"], rec["model"]
    rec["model"] = "deepseek_v3"
    (d / "rtn.json").write_text(json.dumps(rec))
    (tmp_path / "refit-command-n32x256-s0").mkdir()  # validation runs: not read
    (tmp_path / "refit-command-n32x256-s0" / "rtn.json").write_text(json.dumps(rec))
    cells = rr.command_cells(tmp_path)
    assert [(c["seed"], c["model"]) for c in cells] == [(2, "deepseek_v3")]
