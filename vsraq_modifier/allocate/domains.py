"""Calibration data as named domains (MODE: importance balanced across domains).

A domain is a name and a text: ``--dataset NAME=FILE`` (FILE a plain UTF-8 text, or
the JSON / JSONL that AutoRound's ``--dataset`` takes: a list of strings, or objects
with a ``text`` field). Without ``--dataset`` the shipped calibration text is split
into its three sources. The shipped file records no boundaries, but
scripts/build_corpus.py writes its documents source by source (KJV chapters, then
Python-doc sections, then Jargon File entries), each kept only if the SHA-256 of
``source/name`` falls in the calibration buckets; the split below finds the last
KJV chapter and the first Jargon entry by that same hash, so it is exact, and
tests/unit/allocate/test_allocate_domains.py checks it on both shipped texts.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "Domain",
    "DomainError",
    "domain_weights",
    "load_domains",
    "parse_dataset_arg",
    "read_texts",
    "shipped_domains",
]

SplitName = Literal["calibration", "heldout"]
#: build_corpus.py's buckets (of 1000) of each split
_BUCKETS = {"calibration": (0, 15), "heldout": (15, 45)}
_POS = r"(n|v|vt|vi|adj|adv|interj|excl|pref|suff|prep|pron|abbrev|conj|imp|pl)\."
_JARGON_SECOND = re.compile(rf"^(/.*/,? )?{_POS}")


class DomainError(ValueError):
    """A --dataset / --domain-weights input that cannot be used (named)."""


@dataclass(frozen=True)
class Domain:
    name: str
    text: str
    source: str  # the file, or "shipped:<source>"


def parse_dataset_arg(value: str) -> tuple[str, str]:
    """``NAME=FILE`` or ``FILE`` (the name is then the file's stem)."""
    name, sep, path = value.partition("=")
    if not sep:
        return Path(value).stem, value
    if not name or not path:
        raise DomainError(f"--dataset {value!r}: expected NAME=FILE or FILE")
    return name, path


def read_texts(path: str | Path) -> str:
    """The text of a dataset file: plain UTF-8, or JSON / JSONL strings or
    ``{"text": ...}`` objects (joined by blank lines)."""
    p = Path(path)
    if not p.is_file():
        raise DomainError(f"--dataset {path}: no such file")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DomainError(f"--dataset {path}: not UTF-8 text ({e.reason})") from None
    if p.suffix not in (".json", ".jsonl"):
        return raw
    try:
        rows = json.loads(raw) if p.suffix == ".json" else None
    except json.JSONDecodeError as e:
        raise DomainError(f"--dataset {path}: invalid JSON ({e.msg})") from None
    if rows is None:
        try:
            rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise DomainError(f"--dataset {path}: invalid JSONL ({e.msg})") from None
    if isinstance(rows, dict):
        rows = [rows]
    texts = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, str):
            texts.append(row)
        elif isinstance(row, dict) and isinstance(row.get("text"), str):
            texts.append(row["text"])
        else:
            raise DomainError(
                f"--dataset {path}: every entry must be a string or an object with a "
                "'text' string"
            )
    return "\n\n".join(texts)


def load_domains(values: list[str] | None) -> list[Domain]:
    """Domains from ``--dataset`` values (names must differ), or the shipped
    calibration text's three sources when none are given."""
    if not values:
        from vsraq_modifier.data import calibration_text_path

        text = calibration_text_path().read_text(encoding="utf-8")
        return [Domain(n, t, f"shipped:{n}") for n, t in shipped_domains(text).items()]
    pairs = [parse_dataset_arg(v) for v in values]
    names = [n for n, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DomainError(
            f"--dataset: the name {dupes[0]!r} is given twice; give each set its own "
            "NAME=FILE"
        )
    domains = []
    for name, path in pairs:
        text = read_texts(path)
        if not text.strip():
            raise DomainError(f"--dataset {name}={path}: the file has no text")
        domains.append(Domain(name, text, str(path)))
    return domains


def _bucket(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 1000


def shipped_domains(text: str, split: SplitName = "calibration") -> dict[str, str]:
    """The shipped calibration (or held-out) text cut into kjv / pydocs / jargon."""
    lo, hi = _BUCKETS[split]
    lines = text.split("\n")

    def head(i: int) -> bool:
        return (i == 0 or lines[i - 1] == "") and bool(lines[i])

    kjv_heads = [
        i
        for i in range(len(lines) - 2)
        if head(i)
        and lines[i + 1] == ""
        and lines[i + 2].startswith("1 ")
        and lo <= _bucket(f"kjv/{lines[i]}") < hi
    ]
    jargon_heads = [
        i
        for i in range(len(lines) - 1)
        if head(i)
        and _JARGON_SECOND.match(lines[i + 1])
        and lo <= _bucket(f"jargon/{lines[i]}") < hi
    ]
    if not kjv_heads or not jargon_heads or kjv_heads[0] != 0:
        raise DomainError(
            "the shipped text does not have the kjv / pydocs / jargon layout of "
            "scripts/build_corpus.py; pass --dataset NAME=FILE for each domain"
        )
    last = kjv_heads[-1] + 2
    while last < len(lines) and re.match(r"^\d+ ", lines[last]):
        last += 1
    first_jargon = jargon_heads[0]
    parts = {
        "kjv": "\n".join(lines[:last]),
        "pydocs": "\n".join(lines[last:first_jargon]),
        "jargon": "\n".join(lines[first_jargon:]),
    }
    return {k: v.strip("\n") for k, v in parts.items()}


def domain_weights(
    spec: str, names: list[str], tokens: dict[str, int]
) -> dict[str, float]:
    """Weights summing to 1: ``equal`` (MODE: each domain counts the same),
    ``tokens`` (proportional to each domain's calibration tokens: what pooling the
    data does, the no-balance ablation) or ``NAME=W,NAME=W,...``."""
    if spec == "equal":
        raw = {n: 1.0 for n in names}
    elif spec == "tokens":
        raw = {n: float(tokens[n]) for n in names}
    else:
        raw = {}
        for item in spec.split(","):
            name, sep, w = item.partition("=")
            try:
                value = float(w)
            except ValueError:
                value = -1.0
            if not sep or value < 0:
                raise DomainError(
                    f"--domain-weights {spec!r}: use equal, tokens, or NAME=W,... with "
                    "non-negative numbers"
                )
            raw[name.strip()] = value
        if set(raw) != set(names):
            raise DomainError(
                f"--domain-weights names {sorted(raw)} must be exactly the domains "
                f"{sorted(names)}"
            )
    total = sum(raw.values())
    if total <= 0:
        raise DomainError(f"--domain-weights {spec!r}: the weights sum to 0")
    return {n: raw[n] / total for n in names}
