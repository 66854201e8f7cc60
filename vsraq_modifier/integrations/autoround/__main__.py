"""``python -m vsraq_modifier.integrations.autoround ARGS``: the ``auto-round``
command with VSRAQ registered explicitly (works without the import hook)."""

import sys

from vsraq_modifier.integrations.autoround.cli import main

sys.exit(main())
