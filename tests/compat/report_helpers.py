"""Old name of ``tests.helpers.checkpoints`` (see README.md here): the same module."""

import sys

from tests.helpers import checkpoints

sys.modules[__name__] = checkpoints
