"""benchmarks/report.py: the target's verdicts from synthetic cells (the report
decides "met" or "not met" in docs/results.md, so its arithmetic is tested)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import report  # noqa: E402
import report_tables  # noqa: E402


def cell(method, seed, *, jaccard, ppl, kl, oracle, cpu, scheme="W4A16"):
    return {
        "method": method,
        "scheme": scheme,
        "seed": seed,
        "eval": {
            "mean_jaccard": jaccard,
            "mean_exact_match": jaccard,
            "perplexity": ppl,
            "oracle_perplexity": oracle,
            "kl": kl,
            "layers": [{"layer": 0, "jaccard": jaccard}],
        },
        "quantization": {"seconds": cpu, "cpu_seconds": cpu},
        "peak_rss_mb": 1000.0,
    }


def verdicts(cells) -> dict[str, tuple[bool, str]]:
    rows = report.target_rows(report.Table(cells), "W4A16")
    out = {}
    for row in rows:
        _, what, met, measured = [c.strip() for c in row.strip("|").split("|")]
        out[what] = (met == "yes", measured)
    return out


def base(seed):
    return [
        cell(
            "mse",
            seed,
            jaccard=0.98,
            ppl=10.0 + 0.01 * seed,
            kl=0.010,
            oracle=9.8,
            cpu=100.0,
        ),
        cell(
            "topk_mse", seed, jaccard=0.985, ppl=10.0, kl=0.010, oracle=9.8, cpu=120.0
        ),
        cell(
            "router_kl", seed, jaccard=0.985, ppl=10.0, kl=0.010, oracle=9.8, cpu=120.0
        ),
    ]


def test_a_method_that_meets_every_target():
    cells = [c for s in range(3) for c in base(s)]
    cells += [
        cell("vsraq", s, jaccard=0.99, ppl=9.85, kl=0.009, oracle=9.8, cpu=110.0)
        for s in range(3)
    ]
    v = verdicts(cells)
    assert v["disagreement <= 0.60x mse"] == (True, "0.50x")
    assert v["perplexity no worse than mse"][0]
    assert v["KL no worse than mse"][0]
    assert v[">= half of mse's oracle gain"][0]
    assert v["better than topk_mse (disagreement, ppl not worse)"][0]
    assert v["better than router_kl (disagreement, ppl not worse)"][0]
    assert v["time <= 1.15x mse (quantization CPU seconds)"] == (
        True,
        "1.10x CPU (1.10x wall)",
    )


def test_each_shortfall_is_reported():
    cells = [c for s in range(3) for c in base(s)]
    cells += [
        cell("vsraq", s, jaccard=0.984, ppl=10.2, kl=0.02, oracle=9.8, cpu=130.0)
        for s in range(3)
    ]
    v = verdicts(cells)
    assert not v["disagreement <= 0.60x mse"][0]
    assert v["disagreement <= 0.60x mse"][1] == "0.80x"
    assert not v["perplexity no worse than mse"][0]
    assert not v["KL no worse than mse"][0]
    assert not v[">= half of mse's oracle gain"][0]
    assert not v["better than router_kl (disagreement, ppl not worse)"][0]
    assert not v["time <= 1.15x mse (quantization CPU seconds)"][0]


def test_seed_noise_tolerates_a_small_difference():
    # mse's perplexity varies by 0.01 over seeds; vsraq 0.005 worse on average
    cells = [c for s in range(3) for c in base(s)]
    cells += [
        cell(
            "vsraq",
            s,
            jaccard=0.99,
            ppl=10.005 + 0.01 * s,
            kl=0.01,
            oracle=9.8,
            cpu=100.0,
        )
        for s in range(3)
    ]
    assert verdicts(cells)["perplexity no worse than mse"][0]


def test_missing_methods_are_said():
    cells = [cell("mse", 0, jaccard=0.98, ppl=10, kl=0.01, oracle=9.8, cpu=1.0)]
    rows = report.target_rows(report.Table(cells), "W4A16")
    assert rows == ["| W4A16 | vsraq or mse not run | | |"]


def test_main_table_reports_ratio_to_mse():
    cells = [c for s in range(3) for c in base(s)]
    lines = report.main_table(report.Table(cells), "W4A16")
    topk = next(line for line in lines if line.startswith("| topk_mse |"))
    assert "| 0.75 ± 0.00 |" in topk  # (1 - 0.985) / (1 - 0.98)
    assert "1.20 ± 0.00 / 1.20 ± 0.00" in topk


@pytest.mark.parametrize("gain", [0.0, -0.1])
def test_no_oracle_gain_is_not_a_pass(gain):
    cells = [
        cell("mse", 0, jaccard=0.98, ppl=10.0, kl=0.01, oracle=10.0 - gain, cpu=1.0),
        cell("vsraq", 0, jaccard=0.99, ppl=10.0, kl=0.01, oracle=10.0, cpu=1.0),
    ]
    met, measured = verdicts(cells)[">= half of mse's oracle gain"]
    assert not met and measured.startswith("no gain")
    row = report.target_rows(report.Table(cells), "W4A16")[3]
    assert "| n/a |" in row


def test_an_oracle_gain_within_seed_noise_is_not_judged():
    cells = []
    for s, gap in enumerate([0.05, -0.05, 0.01]):
        cells.append(
            cell("mse", s, jaccard=0.98, ppl=10.0, kl=0.01, oracle=10.0 - gap, cpu=1)
        )
        cells.append(
            cell("vsraq", s, jaccard=0.99, ppl=9.9, kl=0.01, oracle=9.9, cpu=1)
        )
    row = report.target_rows(report.Table(cells), "W4A16")[3]
    assert "| n/a | no gain beyond seed noise" in row


def write_run(root: Path, name: str, options: dict, cells, eval_text="heldout", **kw):
    import json

    d = root / name
    d.mkdir(parents=True)
    settings = {
        "iters": 100,
        "nsamples": 128,
        "seqlen": 256,
        "batch_size": 8,
        "eval_tokens": 32768,
        "eval_text": eval_text,
        "options": options,
        **kw,
    }
    (d / "run.json").write_text(json.dumps({"settings": settings}))
    for c in cells:
        (d / f"{c['method']}__{c['scheme']}__s{c['seed']}.json").write_text(
            json.dumps(c)
        )
    return settings


def test_held_out_variants_are_compared_with_the_main_run_s_mse(tmp_path, monkeypatch):
    monkeypatch.setattr(report_tables, "RUNS", tmp_path)
    main = write_run(tmp_path, "main", {}, base(0))
    fast = cell("vsraq", 0, jaccard=0.99, ppl=10.0, kl=0.01, oracle=9.8, cpu=1.0)
    write_run(tmp_path, "main-abc", {"lookahead_every": 2}, [fast])
    write_run(tmp_path, "timing-x", {}, base(0))  # timing runs stay out
    rows = report.sweep_table(main, "heldout", exclude="main")
    assert len(rows) == 3  # header, rule, the one variant cell
    assert "| `main-abc` | W4A16 | 0 | vsraq | lookahead_every=2 |" in rows[2]
    assert "| 0.50x |" in rows[2]  # (1 - 0.99) / (1 - 0.98)


def test_timing_table_ratios_within_the_timing_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(report_tables, "RUNS", tmp_path)
    mse = cell("mse", 0, jaccard=0.98, ppl=10.0, kl=0.01, oracle=9.8, cpu=100.0)
    vsraq = cell("vsraq", 0, jaccard=0.99, ppl=10.0, kl=0.01, oracle=9.8, cpu=125.0)
    fast = cell("vsraq", 0, jaccard=0.99, ppl=10.0, kl=0.01, oracle=9.8, cpu=110.0)
    write_run(tmp_path, "timing-idle", {}, [mse, vsraq])
    write_run(tmp_path, "timing-idle-every2", {"lookahead_every": 2}, [fast])
    write_run(tmp_path, "main", {}, base(0))  # not a timing run: left out
    rows = report.timing_table()
    assert len(rows) == 5
    by_run = {r.split("|")[1].strip(): r for r in rows[2:] if "vsraq" in r}
    assert "| 1.25x | 1.25x |" in by_run["`timing-idle`"]
    assert "lookahead_every=2" in by_run["`timing-idle-every2`"]
    assert "| 1.10x | 1.10x |" in by_run["`timing-idle-every2`"]


def test_a_variant_with_other_iterations_is_compared_with_its_own_mse(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(report_tables, "RUNS", tmp_path)
    main = write_run(tmp_path, "main", {}, base(0))
    long_mse = cell("mse", 0, jaccard=0.99, ppl=10.0, kl=0.01, oracle=9.8, cpu=1.0)
    long_vsraq = cell("vsraq", 0, jaccard=0.995, ppl=10.0, kl=0.01, oracle=9.8, cpu=1)
    write_run(tmp_path, "it200", {}, [long_mse, long_vsraq], iters=200)
    rows = {
        r.split("|")[4].strip(): r
        for r in report.sweep_table(main, "heldout", "main")[2:]
    }
    assert "| iters=200 |" in rows["mse"]
    assert "| iters=200 | 0.0050 | 0.50x |" in rows["vsraq"]  # against its own mse


def test_a_variant_is_compared_only_with_mse_of_its_own_cpu(tmp_path, monkeypatch):
    """The same cell gives other numbers on another CPU model, so a variant run
    begun on one is not paired with the mse of a run begun on the other."""
    import json

    monkeypatch.setattr(report_tables, "RUNS", tmp_path)
    main = write_run(tmp_path, "main", {}, base(0))
    (tmp_path / "main" / "run.json").write_text(
        json.dumps({"settings": main, "machine": {"cpu": "CPU A"}})
    )
    ours = cell("vsraq", 0, jaccard=0.99, ppl=10.0, kl=0.01, oracle=9.8, cpu=1.0)
    mse_b = cell("mse", 0, jaccard=0.96, ppl=10.0, kl=0.01, oracle=9.8, cpu=1.0)
    write_run(tmp_path, "main-b", {}, [{**ours, "cpu": "CPU B"}])
    rows = report.sweep_table(main, "heldout", exclude="main")
    assert rows[2].split("|")[7].strip() == "-"  # no mse on CPU B
    write_run(tmp_path, "main-b-mse", {}, [{**mse_b, "cpu": "CPU B"}])
    rows = {
        r.split("|")[1].strip(): r
        for r in report.sweep_table(main, "heldout", exclude="main")[2:]
    }
    assert "| 0.25x |" in rows["`main-b`"]  # (1 - 0.99) / (1 - 0.96), not / 0.02
