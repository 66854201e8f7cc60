"""Old name of ``tests.helpers.llmcompressor`` (see README.md here): the same module."""

import sys

from tests.helpers import llmcompressor

sys.modules[__name__] = llmcompressor
