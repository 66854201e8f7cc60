"""benchmarks/report_families.py: the two-family target's verdicts and the
Spearman correlations from synthetic cells (docs/results.md reports both)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import report_families as rf  # noqa: E402

from tests.helpers.bench_cells import cell  # noqa: E402


def _group(vsraq_ppl_shift: float) -> list[dict]:
    cells = []
    for seed, noise in enumerate((0.0, 0.1, -0.1)):
        cells.append(cell("mse", seed, dis=0.10, ppl=52.0 + noise, kl=0.010 + noise / 100))
        cells.append(
            cell("vsraq", seed, dis=0.085, ppl=52.0 + noise + vsraq_ppl_shift,
                 kl=0.010 + noise / 100)
        )
    return cells


def test_target_met_within_noise_and_not_beyond() -> None:
    rows = rf.target_rows({("qwen3_moe", "small"): _group(0.05),
                           ("deepseek_v3", "small"): _group(0.5)})
    body = [r for r in rows[2:]]
    assert len(body) == 2
    assert body[0].startswith("| qwen3_moe | small | W2A16G64 | 0.85x |")
    assert body[0].endswith("| yes |")  # +0.05 ppl < mse's sd 0.1
    assert body[1].endswith("| no |")  # +0.5 ppl beyond it


def test_disagreement_above_the_ratio_fails_the_target() -> None:
    cells = [dict(c) for c in _group(0.0)]
    for c in cells:
        if c["method"] == "vsraq":
            c["eval"] = {**c["eval"], "mean_jaccard": 1 - 0.095}
    assert rf.target_rows({("qwen3_moe", "small"): cells})[2].endswith("| no |")


def test_one_seed_leaves_the_target_undecided() -> None:
    one = [c for c in _group(0.05) if c["seed"] == 0]
    assert rf.target_rows({("qwen3_moe", "small"): one})[2].endswith("| - |")


def test_spearman_of_paired_differences() -> None:
    # routing better -> KL better, perplexity unrelated (rank-reversed)
    cells = [cell("mse", s, dis=0.1, ppl=52.0, kl=0.01) for s in range(4)]
    for s in range(4):
        cells.append(cell("vsraq", s, dis=0.1 - 0.01 * s, ppl=52.0 + 0.01 * s,
                          kl=0.01 - 0.001 * s))
    rows, points = rf.correlation({("qwen3_moe", "small"): cells})
    paired = next(r for r in rows if "qwen3_moe, difference" in r)
    assert "| 4 | +1.00" in paired and "-1.00" in paired
    assert len(points["qwen3_moe"]) == 4


def test_runs_are_named_by_the_settings() -> None:
    assert rf.FAMILY_RUNS[("qwen3_moe", "small")] == "it50-n32x128-b8-e16384x256"
    assert rf.FAMILY_RUNS[("deepseek_v3", "default")].startswith(
        "it100-n128x256-b8-e16384x256-"
    )
    assert any("--model deepseek_v3" in c for c in rf.commands(["mse"]))


@pytest.mark.parametrize("shift", [0.0])
def test_group_table_pairs_by_seed(shift) -> None:
    rows = rf.group_table(_group(shift), "W2A16G64")
    vsraq = next(r for r in rows if r.startswith("| vsraq |"))
    assert "0.85 ± 0.00x" in vsraq and "| 3 |" in vsraq


def test_one_cpu_section_pairs_the_default_within_its_run(tmp_path) -> None:
    import json

    assert rf.one_cpu_section(tmp_path) == []  # nothing ran: no section
    d = tmp_path / rf.ONE_CPU_RUNS["qwen3_moe"]
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"settings": {}}))
    for seed in (0, 1):
        for m, dis in (("mse", 0.02), ("vsraq_default", 0.015),
                       ("vsraq_refit", 0.016)):
            c = {**cell(m, seed, dis=dis, ppl=51.0, kl=0.001, scheme="W4A16G64"),
                 "cpu": "CPU A"}
            (d / f"{m}__W4A16G64__s{seed}.json").write_text(json.dumps(c))
    text = "\n".join(rf.one_cpu_section(tmp_path))
    assert "(CPU A)" in text and "deepseek_v3" not in text.split("```")[-1]
    row = next(r for r in text.splitlines() if r.startswith("| vsraq_default | 2 |"))
    assert "| 0.75 ± 0.00x |" in row  # 0.015 / 0.02, each seed against its mse
    assert "| qwen3_moe | default | W4A16G64 | 0.75x |" in text  # the target row


def test_solve_section_renders_deepseek_v3_within_its_run(tmp_path) -> None:
    import json

    assert rf.solve_section(tmp_path) == []  # nothing ran: no section
    d = tmp_path / rf.SOLVE_RUN
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"settings": {}}))
    for seed in (0, 1):
        for m, dis in (("mse", 0.02), ("vsraq_default", 0.016)):
            c = {**cell(m, seed, dis=dis, ppl=41.0, kl=0.001, scheme="W4A16G64"),
                 "cpu": "CPU B"}
            (d / f"{m}__W4A16G64__s{seed}.json").write_text(json.dumps(c))
    text = "\n".join(rf.solve_section(tmp_path))
    assert "CPU B" in text and f"--run-id {rf.SOLVE_RUN}" in text
    row = next(r for r in text.splitlines() if r.startswith("| vsraq_default | 2 |"))
    assert "| 0.80 ± 0.00x |" in row
    assert "the logits target" not in text  # that run has not run
    d = tmp_path / rf.LOGITS_RUN
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"settings": {}}))
    for m, dis in (("mse", 0.02), ("vsraq_default", 0.014)):
        c = {**cell(m, 0, dis=dis, ppl=41.0, kl=0.001, scheme="W4A16G64"),
             "cpu": "CPU B"}
        (d / f"{m}__W4A16G64__s0.json").write_text(json.dumps(c))
    text = "\n".join(rf.solve_section(tmp_path))
    assert "router_refit_target=logits --run-id " + rf.LOGITS_RUN in text
    rows = [r for r in text.splitlines() if r.startswith("| vsraq_default |")]
    assert len(rows) == 2 and "| 0.70x |" in rows[1]  # one seed: no spread


def test_current_section_renders_both_models_with_per_seed_times(tmp_path) -> None:
    import json

    assert rf.current_section(tmp_path) == []  # nothing ran: no section
    first = next(iter(rf.CURRENT_SUFFIXES))
    ids = rf.current_runs(first)
    for (model, budget), rid in ids.items():
        if budget != "default":
            continue
        d = tmp_path / rid
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"settings": {}}))
        for seed, secs in ((0, 110.0), (1, 120.0)):
            for m, dis, cpu in (("mse", 0.02, 100.0), ("vsraq_default", 0.016, secs)):
                c = {**cell(m, seed, dis=dis, ppl=41.0, kl=0.001, scheme="W4A16G64",
                            cpu=cpu), "cpu": "CPU C"}
                (d / f"{m}__W4A16G64__s{seed}.json").write_text(json.dumps(c))
    text = "\n".join(rf.current_section(tmp_path))
    assert "(CPU C)" in text and "qwen3_moe, default budget:" in text
    assert "deepseek_v3, default budget:" in text and "small budget" not in text
    assert f"**With {rf.CURRENT_SUFFIXES[first]}:**" in text
    assert text.count("**With ") == 1  # the later change has not run
    ran = [rid for (_, b), rid in ids.items() if b == "default"]
    assert all(f"--run-id {rid}" in text for rid in ran)
    assert "--iters" not in text  # the default budget's command has no budget flags
    assert text.count("seed by seed: 1.10, 1.20.") == 2
    row = next(r for r in text.splitlines() if r.startswith("| vsraq_default | 2 |"))
    assert "| 0.80 ± 0.00x |" in row and "| 1.15 ± 0.07x |" in row
