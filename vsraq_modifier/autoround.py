"""``python -m vsraq_modifier.autoround ARGS``: short for
``python -m vsraq_modifier.integrations.autoround ARGS``, i.e. ``auto-round ARGS``
with VSRAQ registered explicitly (no import hook needed). Importing this module
does nothing."""

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    import sys

    from vsraq_modifier.integrations.autoround.cli import main

    sys.exit(main())
