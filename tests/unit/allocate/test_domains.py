"""Named calibration domains and the split of the shipped texts by source."""

from __future__ import annotations

import json
import re

import pytest

from vsraq_modifier.allocate.domains import (
    DomainError,
    domain_weights,
    load_domains,
    parse_dataset_arg,
    read_texts,
    shipped_domains,
)
from vsraq_modifier.data import calibration_text_path, heldout_text_path


@pytest.mark.parametrize(
    "split, path",
    [("calibration", calibration_text_path), ("heldout", heldout_text_path)],
)
def test_shipped_text_splits_exactly_by_source(split, path):
    text = path().read_text(encoding="utf-8")
    parts = shipped_domains(text, split)
    assert list(parts) == ["kjv", "pydocs", "jargon"]
    # nothing lost: the parts in order are the text, up to the separators
    assert re.sub(r"\s+", "", "".join(parts.values())) == re.sub(r"\s+", "", text)
    kjv = [line for line in parts["kjv"].split("\n") if line]
    # every KJV line is a chapter heading ("Book 3") or a verse ("12 And ...")
    assert all(re.match(r"^(\d+ |\S.* \d+$)", line) for line in kjv)
    assert not re.search(r"(?m)^\d+ [A-Z]", parts["pydocs"])  # no verse left over
    assert not re.search(r":(func|class|mod|meth):`", parts["jargon"])  # no reST
    assert re.match(r"^\S.*\n/.*/, ", parts["jargon"])  # a Jargon entry first


def test_dataset_files(tmp_path):
    plain = tmp_path / "prose.txt"
    plain.write_text("some prose\n")
    js = tmp_path / "code.json"
    js.write_text(json.dumps(["a = 1", {"text": "b = 2"}]))
    jl = tmp_path / "chat.jsonl"
    jl.write_text(
        json.dumps({"text": "hi"}) + "\n" + json.dumps({"text": "there"}) + "\n"
    )
    assert read_texts(plain) == "some prose\n"
    assert read_texts(js) == "a = 1\n\nb = 2"
    assert read_texts(jl) == "hi\n\nthere"
    assert parse_dataset_arg(f"x={plain}") == ("x", str(plain))
    assert parse_dataset_arg(str(plain)) == ("prose", str(plain))
    ds = load_domains([f"p={plain}", str(js)])
    assert [d.name for d in ds] == ["p", "code"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"content": "x"}]))
    with pytest.raises(DomainError, match="'text' string"):
        read_texts(bad)


def test_default_domains_are_the_shipped_sources():
    assert [d.name for d in load_domains(None)] == ["kjv", "pydocs", "jargon"]


def test_weights():
    names, tokens = ["a", "b"], {"a": 900, "b": 100}
    assert domain_weights("equal", names, tokens) == {"a": 0.5, "b": 0.5}
    assert domain_weights("tokens", names, tokens) == {"a": 0.9, "b": 0.1}
    assert domain_weights("a=3,b=1", names, tokens) == {"a": 0.75, "b": 0.25}
    for spec in ("a=1", "a=-1,b=1", "a=x,b=1", "a=0,b=0"):
        with pytest.raises(DomainError):
            domain_weights(spec, names, tokens)
