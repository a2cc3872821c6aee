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


# -- evaluation ---------------------------------------------------------------------------------
@hookspec(firstresult=True)
def lida_eval_train_baseline(
    kind: str, data_root: str, pretrain_steps: int, adapt_steps: int, threads: int | None, progress: bool
) -> str | None:
    """Train and export the baseline encoder ``lida eval --train-baseline KIND`` compares against.

    ``kind``: one of :data:`lida_plugin.evaluate.corpus.BASELINES`. ``data_root``: the corpus (train
    split only may be used). ``pretrain_steps``/``adapt_steps``: the budget in steps of the default
    batch, counted in training pixels. ``threads``: CPU threads (None: the library's default).
    ``progress``: show progress bars. Returns the path of the exported ONNX model (reused when it
    already exists), or None to let the next implementation answer; raises
    :class:`lida_plugin.evaluate.corpus.ConditionUnavailable` when it cannot train here (no torch).
    lida's training package implements it (entry point ``lida-train``), so the runtime never imports
    the training side.
    """


@hookspec(firstresult=True)
def lida_eval_adapted_condition(entries: list[Any], cfg: Any, families: dict[str, str]) -> dict[str, Any] | None:
    """Score ``lida eval --adapt``: registration plus few-shot adaptation on each episode's gallery.

    ``entries``: the corpus (:class:`lida_plugin.evaluate.corpus.Entry`). ``cfg``: the
    :class:`lida_plugin.evaluate.run.EvalConfig`. ``families``: class -> family. Returns the
    condition's result dict (the shape of every condition in ``results.json``), or None to let the
    next implementation answer; raises :class:`lida_plugin.evaluate.corpus.ConditionUnavailable` when
    it cannot train here. Implemented by lida's training package, like ``lida_eval_train_baseline``.
    """
