"""lida-plugin: is this image AI-generated, and by which registered generator? (LIDA, retrieval-based attribution)."""

from pluggy import HookimplMarker

__version__ = "0.1.0"

#: Marks a plugin's implementation of a hook in :mod:`lida_plugin.hookspecs` (``@hookimpl``).
hookimpl = HookimplMarker("lida_plugin")
