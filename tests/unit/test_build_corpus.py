"""scripts/build_corpus.py fetches the pinned Debian archives and refuses any
other content (a different archive would silently change the held-out text)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import build_corpus  # noqa: E402


def mirror(tmp_path: Path, monkeypatch, payload: bytes, sha: str) -> Path:
    pool = tmp_path / "mirror" / "debian" / "pool"
    pool.mkdir(parents=True)
    (pool / "pkg_1.0_all.deb").write_bytes(payload)
    monkeypatch.setattr(
        build_corpus, "DEBIAN_MIRROR", (tmp_path / "mirror").as_uri() + "/"
    )
    monkeypatch.setattr(
        build_corpus,
        "DEBIAN",
        {"pkg": ("debian/pool/pkg_1.0_all.deb", "pkg_1%3a1.0_all.deb", sha)},
    )
    dl = tmp_path / "dl"
    dl.mkdir()
    return dl


def test_the_pinned_archive_is_fetched_under_apt_s_name(tmp_path, monkeypatch):
    payload = b"archive bytes"
    dl = mirror(tmp_path, monkeypatch, payload, hashlib.sha256(payload).hexdigest())
    build_corpus._download_pinned("pkg", dl)
    assert (dl / "pkg_1%3a1.0_all.deb").read_bytes() == payload


def test_an_archive_with_another_hash_is_refused(tmp_path, monkeypatch):
    dl = mirror(tmp_path, monkeypatch, b"other bytes", "0" * 64)
    with pytest.raises(SystemExit, match="expected 0000"):
        build_corpus._download_pinned("pkg", dl)
    assert not list(dl.iterdir())


def test_a_vanished_archive_names_the_way_out(tmp_path, monkeypatch):
    dl = mirror(tmp_path, monkeypatch, b"x", "0" * 64)
    monkeypatch.setattr(
        build_corpus, "DEBIAN", {"pkg": ("debian/pool/gone.deb", "gone.deb", "0" * 64)}
    )
    with pytest.raises(SystemExit, match="--any-version"):
        build_corpus._download_pinned("pkg", dl)


def test_the_pins_are_the_shipped_model_s_archives():
    import json

    from vsraq_modifier.data import shipped_model_dir

    log = json.loads((shipped_model_dir() / "train_log.json").read_text())
    shipped = log["corpus"]["archives"]
    for _, name, sha in build_corpus.DEBIAN.values():
        assert shipped[name]["sha256"] == sha
