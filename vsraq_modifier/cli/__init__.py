"""The ``vsraq`` command: one sub-command per module of this package.

Each sub-command module defines ``add_parser(subparsers)`` returning its parser and
a ``run(args) -> int`` function; the parser's ``set_defaults(func=run)`` wires it.
Modules are imported lazily so ``vsraq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

#: sub-command name -> module in this package (listed in --help order)
COMMANDS: dict[str, str] = {
    "demo": "vsraq_modifier.cli.demo",
    "report": "vsraq_modifier.cli.report",
    "allocate": "vsraq_modifier.cli.allocate",
    "refit": "vsraq_modifier.cli.refit",
    "check-serving": "vsraq_modifier.cli.check_serving",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vsraq",
        description="Routing-consistent quantization of MoE models (VSRAQ): demo, "
        "routing report. Quantize with `auto-round --loss vsraq` or an "
        "llm-compressor recipe with VSRAQModifier.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:  # sub-command not written yet
            if e.name != module:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("vsraq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
