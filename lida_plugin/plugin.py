"""lida's built-in plugin (entry point ``lida`` in the ``lida_plugin`` group): analysis by lida's own model.

One :class:`~lida_plugin.attribute.Attributor` (one ONNX session, one store stack) is opened per
distinct analysis config on first use and shared by every later call, from any thread.
:func:`close` releases them (hosts call it at shutdown; it is safe to call twice).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

from . import hookimpl

CONFIG_KEYS = ("model", "store", "device", "threads", "top_k", "force", "use_default_store")

_lock = threading.Lock()
_attributors: dict[str, Any] = {}


def attributor_for(config: dict[str, Any]):
    """The shared attributor for ``config`` (see :func:`lida_plugin.hookspecs.lida_analyze_asset`)."""
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown lida config key(s): {', '.join(sorted(unknown))}; known: {', '.join(CONFIG_KEYS)}")
    key = json.dumps({k: config.get(k) for k in CONFIG_KEYS}, sort_keys=True, default=str)
    with _lock:
        att = _attributors.get(key)
        if att is None:
            from .attribute import Attributor
            from .encoder import Encoder
            from .store import open_stack

            encoder = Encoder(config.get("model"), device=config.get("device") or "auto", threads=config.get("threads"))
            stack = open_stack(encoder, config.get("store"), use_default=config.get("use_default_store", True))
            att = _attributors[key] = Attributor(
                encoder, stack, top_k=int(config.get("top_k") or 5), force=bool(config.get("force"))
            )
        return att


def close() -> None:
    """Close every shared attributor's stores."""
    with _lock:
        for att in _attributors.values():
            try:
                att.stores.close()
            except sqlite3.ProgrammingError:  # opened in another thread: the connection goes with the object
                pass
        _attributors.clear()


@hookimpl(trylast=True)
def lida_analyze_asset(path: str, config: dict[str, Any]) -> dict[str, Any]:
    return attributor_for(config or {}).attribute_file(path).to_dict()
