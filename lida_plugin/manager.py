"""The plugin manager: lida's hook specs, the plugins installed by entry point, and the built-in one.

Environment:

* ``LIDA_LOAD_PLUGINS``: comma-separated entry-point names of the ``lida_plugin`` group to load
  (unset: all of them; empty: none but the built-in ``lida``).
* ``LIDA_TRACE_PLUGINS=1``: print every hook call, its implementations and results to stderr.

A host::

    from lida_plugin.manager import get_plugin_manager

    pm = get_plugin_manager()
    record = pm.hook.lida_analyze_asset(path="photo.png", config={})
    extra = [a for part in pm.hook.lida_manifest_assertions(path=p, record=record, manifest=m) for a in part]
    pm.hook.lida_asset_done(path="photo.png", record=record, outputs={})
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import sys
import threading
from pprint import pformat
from typing import Any

import pluggy

from . import hookspecs
from .errors import LidaError

log = logging.getLogger(__name__)

PROJECT = "lida_plugin"
BUILTIN_NAME = "lida"

#: lida's own plugin modules by plugin name, registered before any installed plugin (as pytest's
#: default plugins): each implements ``lida_register_commands`` for its commands.
DEFAULT_PLUGINS = {
    "lida.commands": "lida_plugin.commands",
    "lida.keys": "lida_plugin.keys",
    "lida.verify": "lida_plugin.verify",
    "lida.watch": "lida_plugin.watch.command",
    "lida.batch": "lida_plugin.batch.command",
    "lida.eval": "lida_plugin.evaluate.cli",
}

_lock = threading.Lock()
_shared: pluggy.PluginManager | None = None


def new_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh manager: specs, entry-point plugins (filtered by ``LIDA_LOAD_PLUGINS``), then the built-in."""
    from . import plugin as builtin

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, module in DEFAULT_PLUGINS.items():  # lida's own: an import failure is a bug in lida, raised as such
        pm.register(importlib.import_module(module), name=name)
    if load_entrypoints:
        wanted = os.environ.get("LIDA_LOAD_PLUGINS")
        try:
            if wanted is None:
                pm.load_setuptools_entrypoints(PROJECT)
            else:
                for name in (n.strip() for n in wanted.split(",")):
                    if name and not pm.load_setuptools_entrypoints(PROJECT, name=name) and not pm.has_plugin(name):
                        log.warning("LIDA_LOAD_PLUGINS names %r but no %s entry point has that name", name, PROJECT)
        except Exception as exc:  # a broken installed plugin: say which, and how to run without it
            raise LidaError(
                f"a {PROJECT} plugin failed to load: {type(exc).__name__}: {exc}"
                " (set LIDA_LOAD_PLUGINS to the plugins you want, e.g. LIDA_LOAD_PLUGINS= for none)"
            ) from exc
    if not pm.is_registered(builtin):  # a source checkout without installed metadata
        pm.register(builtin, name=BUILTIN_NAME)
    if os.environ.get("LIDA_TRACE_PLUGINS"):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager (built on first use); hosts may register more plugins on it."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = new_plugin_manager()
        return _shared


def notify_asset_done(pm: pluggy.PluginManager, *, path: str, record: dict[str, Any], outputs: dict[str, str]) -> bool:
    """Call ``lida_asset_done``; a failing plugin is logged, never raised (the asset is done). True if all succeeded."""
    try:
        pm.hook.lida_asset_done(path=path, record=record, outputs=outputs)
        return True
    except Exception:
        log.exception("a lida_asset_done plugin failed for %s", path)
        return False


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of the plugins a host installed or lida loaded by entry point (lida's :data:`DEFAULT_PLUGINS` left out)."""
    return sorted(name for name, _ in pm.list_name_plugin() if name not in DEFAULT_PLUGINS)


def _trace_before(hook_name: str, hook_impls: list, kwargs: dict[str, Any]) -> None:
    impls = ", ".join(i.plugin_name for i in hook_impls)
    print(f"lida hook {hook_name}({', '.join(kwargs)}) -> [{impls}]\n{pformat(kwargs, width=100)}", file=sys.stderr)


def _trace_after(outcome: Any, hook_name: str, hook_impls: list, kwargs: dict[str, Any]) -> None:
    exc = outcome.exception
    result = f"raised {exc!r}" if exc is not None else pformat(outcome.get_result(), width=100)
    print(f"lida hook {hook_name} result: {result}", file=sys.stderr)


def record_outputs(record: dict[str, Any]) -> dict[str, str]:
    """The ``outputs`` argument of ``lida_asset_done`` for a record: its manifest file, if one was written."""
    m = record.get("manifest")
    return {"manifest": m["path"]} if isinstance(m, dict) and m.get("status") == "ok" and m.get("path") else {}


#: Labels only lida itself writes; a plugin assertion with one of them is dropped.
RESERVED_LABEL_PREFIXES = ("c2pa.", "org.lida.")


def plugin_assertions(
    pm: pluggy.PluginManager, *, path: str, record: dict[str, Any], manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    """Collect ``lida_manifest_assertions`` results for the manifest writer: well-formed, unreserved, in order.

    The writer calls ``manifest["assertions"] += plugin_assertions(pm, path=..., record=..., manifest=...)``
    with the manager it was given. A malformed or reserved assertion is logged and dropped;
    when a plugin raises, the error is logged and the manifest is written without plugin assertions.
    """
    out = []
    try:
        # copies: a plugin reads them; one that changed lida's own assertion in place would change what is signed
        parts = pm.hook.lida_manifest_assertions(
            path=str(path), record=copy.deepcopy(record), manifest=copy.deepcopy(manifest)
        )
    except Exception:
        log.exception("a lida_manifest_assertions plugin failed for %s; no plugin assertions added", path)
        return []
    for part in parts:
        if part is not None and not isinstance(part, list | tuple):
            log.warning("dropped a lida_manifest_assertions result that is not a list of assertions: %r", part)
            continue
        for a in part or []:
            label = a.get("label") if isinstance(a, dict) else None
            if not isinstance(label, str) or not label or not isinstance(a.get("data"), dict):
                log.warning("dropped a plugin assertion that is not {label: str, data: dict}: %r", a)
            elif label.startswith(RESERVED_LABEL_PREFIXES):
                log.warning("dropped a plugin assertion with the reserved label %r", label)
            else:
                out.append({"label": label, "data": a["data"]})
    return out
