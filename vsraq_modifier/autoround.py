"""``python -m vsraq_modifier.autoround ARGS``: ``auto-round ARGS`` with VSRAQ
registered explicitly (no import hook needed; docs/errors.md). Importing this
module does nothing."""

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    import sys

    from vsraq_modifier.integrations.autoround.cli import main

    sys.exit(main())
