"""The demo's summary: ratios to mse and the oracle-gain share (None where there
is nothing to win back)."""

from __future__ import annotations

from types import SimpleNamespace

from vsraq_modifier.cli.demo_summary import format_summary, summarize


def _model(label, jaccard, ppl, oracle, kl):
    return SimpleNamespace(
        label=label,
        perplexity=ppl,
        oracle_perplexity=oracle,
        kl=kl,
        mean=lambda key, j=jaccard: j,
    )


def test_summary_ratios_and_oracle_share() -> None:
    report = SimpleNamespace(
        models=[
            _model("mse", 0.98, 51.3, 51.2, 0.002),
            _model("vsraq", 0.99, 51.25, 51.2, 0.001),
        ]
    )
    runs = {
        "mse": SimpleNamespace(seconds=10.0),
        "vsraq": SimpleNamespace(seconds=13.0),
    }
    s = summarize(report, runs)
    assert abs(s["disagreement_ratio"] - 0.5) < 1e-9
    assert abs(s["oracle_gain_captured"] - 0.5) < 1e-9
    assert abs(s["time_ratio"] - 1.3) < 1e-9
    assert "0.50x" in format_summary(s) and "1.30x mse's" in format_summary(s)
    worse = SimpleNamespace(
        models=[
            _model("mse", 0.98, 51.2, 51.3, 0.002),
            _model("vsraq", 0.99, 51.2, 51.3, 0.002),
        ]
    )
    assert summarize(worse, runs)["oracle_gain_captured"] is None  # no room


def test_the_oracle_line_says_what_a_share_outside_0_1_means() -> None:
    runs = {"mse": SimpleNamespace(seconds=1.0), "vsraq": SimpleNamespace(seconds=1.0)}

    def line(ppl_vsraq: float) -> str:
        report = SimpleNamespace(
            models=[
                _model("mse", 0.98, 51.30, 51.20, 0.002),
                _model("vsraq", 0.99, ppl_vsraq, 51.20, 0.001),
            ]
        )
        text = format_summary(summarize(report, runs))
        return next(ln for ln in text.splitlines() if "oracle routing" in ln)

    assert "lowers mse's perplexity by 0.1000" in line(51.25)
    assert "share of that gain recovered: 0.50" in line(51.25)
    assert "4.00x that gain" in line(50.90) and "not routing alone" in line(50.90)
    assert "raises it by 0.0500 (none of that gain recovered)" in line(51.35)
