"""Old name of ``tests.helpers.routers`` (see README.md here): the same module."""

import sys

from tests.helpers import routers

sys.modules[__name__] = routers
