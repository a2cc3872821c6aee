"""lida's built-in plugin (entry point ``lida`` in the ``lida_plugin`` group): analysis by lida's own model.

One :class:`~lida_plugin.attribute.Attributor` (one ONNX session, one store stack) is opened per
distinct analysis config on first use and shared by every later call, from any thread.
:func:`close` releases them (hosts call it at shutdown; it is safe to call twice).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any

from . import hookimpl
from .cores import check_parallel

CONFIG_KEYS = ("model", "store", "device", "threads", "top_k", "force", "use_default_store")

_lock = threading.Lock()
_attributors: dict[str, Any] = {}


#: What each config value may be (``None`` always: the default). A string "false" for a flag used to count as
#: true (a forced verdict on a JPEG), a 0 ``top_k`` became 5 without a word.
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str, os.PathLike), "store": (str, os.PathLike), "device": (str,), "threads": (int,),
    "top_k": (int,), "force": (bool,), "use_default_store": (bool,),
}  # fmt: skip


def check_config(config: Any) -> dict[str, Any]:
    """``config`` if it is a dict of known keys with values of the right types, else ``ValueError``/``TypeError``
    naming the key."""
    if not isinstance(config, dict):
        raise TypeError(f"lida config must be a dict, got {type(config).__name__}")
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown lida config key(s): {', '.join(sorted(unknown))}; known: {', '.join(CONFIG_KEYS)}")
    for k, v in config.items():
        types = _CONFIG_TYPES[k]
        if v is not None and (not isinstance(v, types) or (bool not in types and isinstance(v, bool))):
            want = " or ".join("path" if t is os.PathLike else t.__name__ for t in types)
            raise TypeError(f"lida config {k!r} must be {want}, got {type(v).__name__} {v!r}")
    if config.get("top_k") is not None and config["top_k"] < 1:
        raise ValueError(f"lida config 'top_k' must be >= 1, got {config['top_k']}")
    check_parallel(config.get("threads"), "lida config 'threads'")
    return config


def attributor_for(config: dict[str, Any]):
    """The shared attributor for ``config`` (see :func:`lida_plugin.hookspecs.lida_analyze_asset`)."""
    check_config(config)
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
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return attributor_for({} if config is None else config).attribute_file(os.fspath(path)).to_dict()
