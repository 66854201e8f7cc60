"""Candidate schemes of ``vsraq allocate``: AutoRound preset names, optionally with
``@GROUP``, their storage cost, and how each host spells them.

The cost of a weight matrix is counted as AutoScheme counts it by default
(``auto_round/auto_scheme/utils.py::compute_layer_bits``, auto-round 0.15.1):
``bits * in * out`` for the weights plus, per group of ``group_size`` inputs of each
output row, a 16-bit scale and a ``bits``-bit zero point (AutoScheme counts the
zero point for every ``int`` data type, symmetric ones included). Only integer
weight-only presets (activations kept at 16 bits) are candidates: round-to-nearest
of the weights alone is what the sensitivity measures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SCALE_BITS",
    "Scheme",
    "SchemeError",
    "check_tiling",
    "matrix_bits",
    "parse_scheme",
    "parse_schemes",
]

#: bits of one int scale, as AutoScheme counts it (non-FP4/MX data types)
SCALE_BITS = 16


class SchemeError(ValueError):
    """A --schemes entry that cannot be allocated (named in the message)."""


@dataclass(frozen=True)
class Scheme:
    """One candidate: ``label`` is what the user wrote (``W4A16@64``)."""

    label: str
    preset: str
    bits: int
    group_size: int
    sym: bool
    data_type: str = "int"

    def autoround(self) -> dict[str, Any]:
        """An entry of AutoRound's ``layer_config=``."""
        return {
            "bits": self.bits,
            "group_size": self.group_size,
            "sym": self.sym,
            "data_type": self.data_type,
            "act_bits": 16,
        }

    def compressed_tensors(self) -> dict[str, Any]:
        """The ``weights`` block of a compressed-tensors config group."""
        args: dict[str, Any] = {
            "num_bits": self.bits,
            "type": "int",
            "symmetric": self.sym,
            "strategy": "group" if self.group_size > 0 else "channel",
        }
        if self.group_size > 0:
            args["group_size"] = self.group_size
        return args


def _presets() -> list[str]:
    from auto_round.schemes import PRESET_SCHEMES

    return list(PRESET_SCHEMES)


def parse_scheme(text: str) -> Scheme:
    """``PRESET`` or ``PRESET@GROUP`` (an AutoRound preset name, e.g. ``W4A16@64``)."""
    from auto_round.schemes import PRESET_SCHEMES

    label = text.strip()
    preset, sep, group = label.partition("@")
    preset = preset.upper()
    if preset not in PRESET_SCHEMES:
        raise SchemeError(
            f"scheme {label!r}: unknown AutoRound preset {preset!r}; use one of "
            f"{', '.join(p for p in _presets() if not p.startswith('GGUF'))}, "
            "optionally with @GROUP (e.g. W4A16@64)"
        )
    s = PRESET_SCHEMES[preset]
    act_bits = s.act_bits if s.act_bits is not None else 16
    if s.data_type != "int" or act_bits < 16 or not s.bits or s.bits >= 16:
        raise SchemeError(
            f"scheme {label!r}: only integer weight-only presets (W2A16, W2A16G32, "
            "W2A16G64, W3A16, W4A16, W8A16, ...) can be allocated; "
            f"{preset} has data_type={s.data_type}, bits={s.bits}, act_bits={act_bits}"
        )
    group_size = s.group_size
    if sep:
        try:
            group_size = int(group)
        except ValueError:
            group_size = 0
        if group_size < 1 and group_size != -1:
            raise SchemeError(
                f"scheme {label!r}: @{group} must be a positive group size, or -1 for "
                "one scale per output channel"
            )
    return Scheme(label, preset, int(s.bits), int(group_size), bool(s.sym))


def parse_schemes(text: str | Iterable[str]) -> list[Scheme]:
    """Comma-separated schemes, at least two, with different labels."""
    items = text.split(",") if isinstance(text, str) else list(text)
    schemes = [parse_scheme(t) for t in items if t.strip()]
    labels = [s.label for s in schemes]
    if len(schemes) < 2:
        raise SchemeError(
            f"--schemes {','.join(labels) or '(empty)'}: give at least two candidate "
            "schemes, e.g. W2A16G64,W4A16@64"
        )
    if len(set(labels)) != len(labels):
        raise SchemeError(f"--schemes lists a scheme twice: {','.join(labels)}")
    keys = [(s.bits, s.group_size, s.sym) for s in schemes]
    if len(set(keys)) != len(keys):
        raise SchemeError(
            f"--schemes {','.join(labels)}: two entries are the same scheme "
            "(bits, group size, symmetry)"
        )
    return schemes


def matrix_bits(scheme: Scheme, in_features: int, out_features: int) -> int:
    """Storage bits of one ``out x in`` weight matrix, overhead counted as AutoScheme
    does (module docstring)."""
    g = scheme.group_size
    if g > 0:
        groups = out_features * math.ceil(in_features / g)
    elif g == -1:
        groups = out_features
    else:
        groups = 1
    zero_point = scheme.bits  # AutoScheme: counted for every "int" data type
    return scheme.bits * in_features * out_features + groups * (SCALE_BITS + zero_point)


def check_tiling(scheme: Scheme, widths: dict[str, int]) -> None:
    """Refuse a scheme whose groups do not tile every input width (name -> width)."""
    g = scheme.group_size
    if g <= 0:
        return
    bad = {name: w for name, w in widths.items() if w % g}
    if bad:
        name, width = next(iter(bad.items()))
        divisors = [
            d for d in (32, 64, 128) if all(w % d == 0 for w in widths.values())
        ]
        hint = f"use {scheme.preset}@{divisors[-1] if divisors else -1}"
        raise SchemeError(
            f"scheme {scheme.label!r}: groups of {g} do not tile the {width} inputs "
            f"of {name} ({len(bad)} weight kinds affected); {hint}, or a group size "
            "that divides every input width"
        )
