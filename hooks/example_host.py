"""An example host: finds lida by its entry point, analyses a folder, forwards each result to a sink.

    python -m lida_hooks.example_host FOLDER [--sink records.jsonl] [--model encoder.onnx]

It is what a DAM or ingest system does, in 60 lines: build a pluggy ``PluginManager`` for the
``lida_plugin`` project, add lida's hook specs, load every installed plugin by entry point
(lida itself is the ``lida`` entry point of the ``lida-plugin`` distribution), register its own
plugins (here :mod:`lida_hooks.example_sink`), then call ``lida_analyze_asset`` per file and
``lida_asset_done`` with the result. Exit code: 0 when every file was analysed, 1 when some
could not be (their records say why), 3 when lida is not installed or cannot start.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pluggy

from lida_plugin import hookspecs
from lida_plugin.errors import LidaError

from . import example_sink


def build_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("lida_plugin")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints("lida_plugin")  # lida ("lida = lida_plugin.plugin") and any other installed plugin
    if not pm.has_plugin("lida"):
        raise LidaError("the lida_plugin entry point 'lida' is not installed: pip install lida-plugin")
    if not pm.is_registered(example_sink):
        pm.register(example_sink, name="example-sink")
    return pm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="example_host", description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--sink", help="JSON-lines file the example sink appends to (default $LIDA_EXAMPLE_SINK)")
    ap.add_argument("--model", help="encoder ONNX file (default $LIDA_MODEL, else the bundled model)")
    ap.add_argument("--store", help="user exemplar store (default $LIDA_STORE, else the per-user one)")
    ap.add_argument("--no-default-store", action="store_true", help="do not search the bundled default store")
    args = ap.parse_args(argv)
    if not args.folder.is_dir():
        ap.error(f"{args.folder} is not a folder")  # exit 2, not a traceback
    if args.sink:
        os.environ["LIDA_EXAMPLE_SINK"] = args.sink
    config = {"model": args.model, "store": args.store, "use_default_store": not args.no_default_store}
    try:
        pm = build_plugin_manager()
        print("plugins:", ", ".join(sorted(name for name, _ in pm.list_name_plugin())), file=sys.stderr)
        failed = 0
        for path in sorted(p for p in args.folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            record = pm.hook.lida_analyze_asset(path=str(path), config=config)
            pm.hook.lida_asset_done(path=str(path), record=record, outputs={})
            failed += record["status"] != "ok"
            detail = record.get("generator") or record.get("error") or "-"
            print(f"{path.name}\t{record.get('verdict') or 'error'}\t{detail}")
    except LidaError as exc:
        print(f"example_host: {exc}", file=sys.stderr)
        return 3
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
