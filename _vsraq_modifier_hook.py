"""Post-import hook that lets the hosts find vsraq-modifier without an explicit import.

Imported at every interpreter start by ``vsraq_modifier.pth``; it must stay cheap:
only ``os`` and ``sys`` (already loaded by ``site``), no torch, not even
``importlib.abc`` (which pulls in ``importlib.resources``, pathlib, tempfile, ...:
~30 ms, most of a bare interpreter start). It installs a meta-path finder (duck
typed) that waits for one of the target modules below to be imported and, right
after that module has executed, calls the plugin's registration function for it.
Nothing else is touched.

Set ``VSRAQ_DISABLE_HOOK=1`` to switch it off.
"""

from __future__ import annotations

import os
import sys

# module imported by the host -> "package.module:function" called after it executed
TARGETS: dict[str, str] = {
    "llmcompressor.modifiers.factory": (
        "vsraq_modifier.integrations.llmcompressor.register:on_factory_import"
    ),
    # auto_round.cli.main (not .parser): its ``tune`` must exist to be wrapped
    "auto_round.cli.main": "vsraq_modifier.integrations.autoround.cli:on_cli_import",
}


def _run_callback(target: str, module: object) -> None:
    """Call the plugin's registration; a failure warns instead of breaking the
    host's own import (the host still works, only without vsraq)."""
    import importlib

    mod_name, func_name = target.split(":")
    try:
        callback = getattr(importlib.import_module(mod_name), func_name)
        callback(module)
    except Exception as e:  # noqa: BLE001 - must never break the host import
        import warnings

        warnings.warn(
            f"vsraq-modifier could not register with {module.__name__!r} "
            f"({target}): {e!r}. The host works without VSRAQ; reinstall "
            "vsraq-modifier or import vsraq_modifier's integration explicitly "
            "(docs/errors.md).",
            RuntimeWarning,
            stacklevel=2,
        )


class _PostImportLoader:
    """importlib Loader protocol; everything else (get_source for tracebacks,
    get_filename, is_package, ...) is the wrapped loader's."""

    def __init__(self, wrapped, target: str) -> None:  # noqa: ANN001
        self._wrapped = wrapped
        self._target = target

    def __getattr__(self, name: str):  # noqa: ANN204
        wrapped = self.__dict__.get("_wrapped")
        if wrapped is None:
            raise AttributeError(name)
        return getattr(wrapped, name)

    def create_module(self, spec):  # noqa: ANN001 - importlib protocol
        return self._wrapped.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        self._wrapped.exec_module(module)
        _run_callback(self._target, module)


class _PostImportFinder:  # importlib MetaPathFinder protocol
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001
        callback = TARGETS.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PostImportLoader(spec.loader, callback)
                return spec
        return None


def install() -> None:
    """Install the finder once (idempotent); already-imported targets run now."""
    if os.environ.get("VSRAQ_DISABLE_HOOK"):
        return
    if any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PostImportFinder())


install()
