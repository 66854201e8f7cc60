"""The demo's comparison of the two runs: routing disagreement, perplexity, KL,
the share of mse's oracle-routing gain that vsraq recovers, and the time ratio."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_summary", "summarize"]


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def summarize(report: Any, runs: dict) -> dict[str, float | None]:
    by = {m.label: m for m in report.models}
    mse, vsraq = by["mse"], by["vsraq"]
    d_mse, d_vsraq = 1 - mse.mean("jaccard"), 1 - vsraq.mean("jaccard")
    gain = None  # no oracle pass, or nothing for routing to win back
    if mse.oracle_perplexity is not None:
        room = mse.perplexity - mse.oracle_perplexity
        if room > 0:
            gain = (mse.perplexity - vsraq.perplexity) / room
    return {
        "disagreement_mse": d_mse,
        "disagreement_vsraq": d_vsraq,
        "disagreement_ratio": _ratio(d_vsraq, d_mse),
        "perplexity_mse": mse.perplexity,
        "perplexity_vsraq": vsraq.perplexity,
        "kl_mse": mse.kl,
        "kl_vsraq": vsraq.kl,
        "oracle_perplexity_mse": mse.oracle_perplexity,
        "oracle_gain_captured": gain,
        "time_ratio": _ratio(runs["vsraq"].seconds, runs["mse"].seconds),
    }


def _oracle_line(s: dict[str, Any], share: float) -> str:
    """mse's oracle-routing gain and vsraq's perplexity gain over mse, with
    ``share`` (vsraq's gain over mse's oracle gain) in words: a share above 1 or
    below 0 is not a fraction of anything."""
    room = s["perplexity_mse"] - s["oracle_perplexity_mse"]
    won = s["perplexity_mse"] - s["perplexity_vsraq"]
    head = f"  oracle routing lowers mse's perplexity by {room:.4f}; vsraq "
    if won < 0:
        return head + f"raises it by {-won:.4f} (none of that gain recovered)"
    if share > 1:
        return head + (
            f"lowers it by {won:.4f} ({share:.2f}x that gain: more than restoring "
            "mse's routing would give, so not routing alone)"
        )
    return head + f"lowers it by {won:.4f} (share of that gain recovered: {share:.2f})"


def format_summary(s: dict[str, float | None]) -> str:
    lines = [
        "vsraq vs mse (same scheme, seed, iterations, calibration samples):",
        f"  routing disagreement (1 - mean Jaccard): {s['disagreement_vsraq']:.4f} vs "
        f"{s['disagreement_mse']:.4f} ({s['disagreement_ratio']:.2f}x)",
        f"  perplexity: {s['perplexity_vsraq']:.3f} vs {s['perplexity_mse']:.3f}",
        f"  KL(reference || model): {s['kl_vsraq']:.5f} vs {s['kl_mse']:.5f}",
    ]
    share = s["oracle_gain_captured"]
    if share is not None:
        lines.append(_oracle_line(s, share))
    elif s["oracle_perplexity_mse"] is not None:
        lines.append(
            "  oracle routing does not lower mse's perplexity "
            f"({s['oracle_perplexity_mse']:.3f}): no routing loss to win back"
        )
    lines.append(f"  quantization time: {s['time_ratio']:.2f}x mse's")
    return "\n".join(lines)
