"""The ``auto-round`` command's own flags and their abbreviations resolve exactly
as without the plugin.

argparse expands a unique prefix (``--v`` -> ``--vllm_args``); the flags the
plugin adds (``--loss``, ``--vsraq_*``) can make such a prefix ambiguous or send
it elsewhere. The host's parser is built twice in fresh interpreters, with the
import hook switched off (``VSRAQ_DISABLE_HOOK=1``) and on, and every prefix of
a host flag that also starts a plugin flag is resolved in both."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: prints {"flags": [...], "resolved": {prefix: outcome}} for every prefix (from
#: ``--x`` on) of every long flag (outcome: the destinations set, or the error)
_PROBE = r"""
import contextlib, io, json
import auto_round.cli.main  # the hook adds the plugin's flags here (if enabled)
from auto_round.cli.parser import build_quantize_parser

class Refused(Exception):
    pass

p = build_quantize_parser()
def error(message):
    raise Refused(message)
p.error = error
flags = sorted({s for a in p._actions for s in a.option_strings if s[:2] == "--"})
defaults = vars(p.parse_known_args([])[0])
resolved = {}
prefixes = sorted({f[:k] for f in flags for k in range(3, len(f) + 1)})
for prefix in prefixes:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help prints, exits
            ns, rest = p.parse_known_args([prefix, "1"])
        changed = sorted(k for k, v in vars(ns).items() if defaults.get(k, None) != v)
        resolved[prefix] = ["dests", changed, rest]
    except SystemExit as e:
        resolved[prefix] = ["exit", e.code]
    except Refused as e:
        message = str(e)
        resolved[prefix] = ["error", "ambiguous" if "ambiguous" in message else message]
print(json.dumps({"flags": flags, "resolved": resolved}))
"""


def _probe(*, hook: bool) -> subprocess.Popen:
    """Start the probe (both run at once: each imports torch and auto-round)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("VSRAQ_DISABLE_HOOK", None)
    if not hook:
        env["VSRAQ_DISABLE_HOOK"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", _PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _result(probe: subprocess.Popen) -> dict:
    out, err = probe.communicate(timeout=180)
    assert probe.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _capturable(host: list[str], added: list[str]) -> list[str]:
    """Every prefix (from ``--x`` on) of a host flag that also starts an added
    flag: the abbreviations the added flags could capture."""
    out = set()
    for flag in host:
        for k in range(3, len(flag) + 1):
            if any(a.startswith(flag[:k]) for a in added):
                out.add(flag[:k])
    return sorted(out)


@pytest.mark.slow
def test_host_flags_and_abbreviations_resolve_as_without_the_plugin():
    probes = _probe(hook=False), _probe(hook=True)
    without, with_plugin = map(_result, probes)
    host = without["flags"]
    added = sorted(set(with_plugin["flags"]) - set(host))
    assert "--loss" in added and "--vsraq_margin" in added  # the hook ran
    prefixes = _capturable(host, added)
    assert "--v" in prefixes and "--lo" in prefixes  # what the check covers
    before, after = without["resolved"], with_plugin["resolved"]
    changed = {p: (before[p], after[p]) for p in prefixes if before[p] != after[p]}
    assert not changed, "host abbreviations that resolve differently with the " + (
        "plugin (prefix: (without, with)): " + json.dumps(changed)
    )
