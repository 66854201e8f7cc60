import sys

from vsraq_modifier.cli import main

sys.exit(main())
