"""Hatch build hook: ship ``vsraq_modifier.pth`` at the top of site-packages.

The .pth line imports ``_vsraq_modifier_hook``, a stdlib-only module that installs a
post-import hook (no torch, no host import). It must be present for wheel *and*
editable installs, so it goes into both ``force_include`` maps. (An editable install
finds ``_vsraq_modifier_hook.py`` itself in the source tree: its own path ``.pth``
sorts, and so runs, before ours.)
"""

from __future__ import annotations

from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH_NAME = "vsraq_modifier.pth"


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        pth = Path(self.root) / "vsraq_modifier" / "_hook.pth"
        build_data["force_include"][str(pth)] = PTH_NAME
        build_data.setdefault("force_include_editable", {})[str(pth)] = PTH_NAME
