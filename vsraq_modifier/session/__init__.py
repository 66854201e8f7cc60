"""One decoder block's VSRAQ life, host-free: :class:`BlockSession` (reference
capture, tuning steps, agreement, report) and :class:`ModelRouting` (the routers
and layers of the model a run tunes). Both hosts' glue calls these."""

from vsraq_modifier.session.block import MEASURE_SAMPLES, BlockSession, Phase
from vsraq_modifier.session.block_report import BlockReport
from vsraq_modifier.session.model import ModelRouting

__all__ = ["MEASURE_SAMPLES", "BlockReport", "BlockSession", "ModelRouting", "Phase"]
