"""The per-block log line: host loss, routing terms and agreement per router,
with nan where a value was not measured."""

from __future__ import annotations

from dataclasses import asdict

from vsraq_modifier.session.block_report import BlockReport


def test_line_lists_terms_and_agreement() -> None:
    report = BlockReport(
        layer=2,
        loss="vsraq",
        iters=10,
        host_first=0.123456,
        host_last=0.01,
        terms_first={"value": 1.0, "structure": 0.5},
        terms_last={"value": 0.25},
        agreement_before={"L2": 0.5},
        agreement_after={"L2": 0.75, "L3 (look-ahead)": 1.0},
    )
    assert report.line() == (
        "vsraq layer 2 [vsraq, 10 iters]: host 0.123 -> 0.01 | "
        "structure 0.5 -> nan | value 1 -> 0.25 | "
        "agreement L2 0.5 -> 0.75, L3 (look-ahead) nan -> 1"
    )


def test_defaults_are_unmeasured_and_serialisable() -> None:
    report = BlockReport(layer=0, loss="mse")
    assert report.line() == "vsraq layer 0 [mse, 0 iters]: host nan -> nan"
    data = asdict(report)
    assert data["reference_bytes"] == 0 and data["terms_first"] == {}
