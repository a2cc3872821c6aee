"""The pluggy hooks of lida-plugin: the contract between lida and the hosts that embed it.

Every hook is called with keyword arguments only (pluggy's rule); an implementation may accept
any subset of the arguments named here. ``lida_plugin`` ships its own implementation
(:mod:`lida_plugin.plugin`, entry point ``lida`` in the ``lida_plugin`` group); a host gets a
plugin manager with all of them from :func:`lida_plugin.manager.get_plugin_manager`.
Reference with examples: ``docs/hooks.md``.
"""

from __future__ import annotations

from typing import Any

from pluggy import HookspecMarker

hookspec = HookspecMarker("lida_plugin")


# -- command line ---------------------------------------------------------------------------
@hookspec
def lida_register_commands(subparsers: Any, pm: Any) -> None:
    """Add subcommands to the ``lida`` command line.

    ``subparsers``: the ``argparse`` subparsers action of ``lida``; add a parser per command with
    ``subparsers.add_parser(NAME, ...)`` and ``set_defaults(func=...)``, where ``func(args) -> int``
    runs the command and returns its exit status (the README's exit codes). ``pm``: the plugin
    manager the command line was built with; it is also ``args.pm`` when ``func`` runs, so a command
    calls hooks on it (never on a global manager). Shared options (model, store, manifest) are in
    :mod:`lida_plugin.cli_options`. Build the parser without importing anything heavy: import what the
    command needs inside ``func``, so that every other ``lida`` command starts fast. An exception here
    stops the command line with exit status 3 and names the plugin. lida's own commands are
    implementations of this hook (:mod:`lida_plugin.commands` and others).
    """


# -- analysis -------------------------------------------------------------------------------
@hookspec(firstresult=True)
def lida_analyze_asset(path: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Analyse the image at ``path`` and return its attribution record; the first non-None result wins.

    ``path``: the asset's file path. ``config``: analysis settings, all optional: ``model``,
    ``store``, ``device``, ``threads``, ``top_k``, ``force``, ``use_default_store`` (the meaning
    of the ``lida attribute`` options of the same names); ``{}`` means the defaults.
    Returns the JSON record of ``schemas/attribution-result.schema.json`` (``status: "error"``
    with an ``error`` reason when the file cannot be analysed: it never raises for a bad file),
    or None to let the next implementation answer. The built-in one runs lida's model.
    """


# -- provenance -----------------------------------------------------------------------------
@hookspec
def lida_manifest_assertions(path: str, record: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Contribute assertions to the C2PA manifest being written for an asset.

    ``path``: the asset. ``record``: its attribution record. ``manifest``: the manifest
    definition being built (read it, do not change it). Returns a list of
    ``{"label": str, "data": dict}`` assertions (reverse-DNS labels, e.g. ``org.example.ingest``),
    or an empty list; the manifest writer adds them all, in plugin order, after lida's own
    attribution assertion.
    """


# -- after an asset -------------------------------------------------------------------------
@hookspec
def lida_asset_done(path: str, record: dict[str, Any], outputs: dict[str, str]) -> None:
    """Told once per asset, after its outputs are written: forward the result to a DAM, queue or log.

    ``path``: the asset. ``record``: its attribution record (``status`` ``"ok"`` or
    ``"error"``; a watcher adds ``duplicate_of`` when the same bytes were seen under another
    name). ``outputs``: what was written for it, by kind (``"report"``, ``"manifest"``,
    ``"quarantine"``, ``"moved_to"``): file paths, possibly empty. Return values are ignored;
    an exception is logged and does not stop the run (the asset stays done).
    """
