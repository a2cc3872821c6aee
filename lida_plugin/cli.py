"""The ``lida`` command.

Exit codes (also in the README):

* 0: every file was analysed (whatever the verdicts)
* 1: at least one file could not be analysed (its record has ``status: "error"``)
* 2: usage error (bad arguments)
* 3: setup error: no model, a model that breaks the contract, a store that cannot be used
* 130: interrupted
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .errors import LidaError

log = logging.getLogger("lida")

EXIT_OK, EXIT_FILE_ERRORS, EXIT_USAGE, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif", ".heic", ".heif", ".jxl"}


# -- shared options ---------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="encoder ONNX file (default: $LIDA_MODEL, else the bundled model)")
    g.add_argument(
        "--device",
        default=os.environ.get("LIDA_DEVICE", "auto"),
        choices=["auto", "cpu", "cuda", "tensorrt"],
        help="execution provider (default: $LIDA_DEVICE, else auto = CUDA when available, else CPU)",
    )
    g.add_argument("--threads", type=int, default=int(os.environ.get("LIDA_THREADS", "0")) or None,
                   help="CPU threads for the encoder (default: $LIDA_THREADS, else all cores)")  # fmt: skip
    g.add_argument("--batch-size", type=int, default=64, help="crops per encoder call (default 64)")


def _add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store")
    g.add_argument("--store", help="user exemplar store (default: $LIDA_STORE, else the per-user data dir)")
    g.add_argument("--no-default-store", action="store_true", help="do not search the bundled default store")


def _open_encoder(args: argparse.Namespace):
    from .encoder import Encoder

    return Encoder(args.model, device=args.device, threads=args.threads, batch_size=args.batch_size)


def expand_paths(paths: list[str], recursive: bool) -> Iterator[tuple[str, str | None]]:
    """``(path, error)`` pairs: files as given, directories walked when ``recursive``.

    ``-`` reads paths from standard input, one per line. A directory without ``recursive``
    yields an error record; a recursive walk keeps image suffixes only and skips hidden names.
    """
    for raw in paths:
        if raw == "-":
            for line in sys.stdin:
                line = line.rstrip("\n")
                if line:
                    yield from expand_paths([line], recursive)
            continue
        p = Path(raw)
        if p.is_dir():
            if not recursive:
                yield raw, "is a directory (pass --recursive to walk it)"
                continue
            for root, dirs, files in os.walk(
                p, onerror=lambda e: log.warning("cannot walk %s: %s", e.filename, e.strerror)
            ):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                        yield str(Path(root) / f), None
        else:
            yield raw, None


# -- attribute ---------------------------------------------------------------------------
def cmd_attribute(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .attribute import Attributor, error_result
    from .manager import get_plugin_manager, notify_asset_done, record_outputs
    from .manifest import writer_from_args
    from .store import open_stack

    encoder = _open_encoder(args)
    manifests = writer_from_args(args, encoder)  # --manifest: keys checked here, before any asset is touched
    pm = get_plugin_manager()
    stack = open_stack(encoder, args.store, use_default=not args.no_default_store)
    attributor = Attributor(encoder, stack, top_k=args.top_k, force=args.force)
    items = list(expand_paths(args.paths, args.recursive))
    if not items:
        log.error("no files to analyse")
        return EXIT_FILE_ERRORS
    good = [p for p, err in items if err is None]
    errors = 0
    records = []
    stream = attributor.attribute_paths(good)
    bar = tqdm(
        total=len(items), unit="img", desc="attributing", disable=None if len(items) > 1 else True, file=sys.stderr
    )
    try:
        for path, err in items:
            # results come out of the stream in the order of `good`
            res = next(stream) if err is None else error_result(path, err, attributor.model_id, attributor.store_id)
            errors += not res.ok
            record = res.to_dict()
            if manifests is not None:  # signed C2PA manifest + prior provenance; a failure is a per-file error
                errors += not manifests.apply(record)
            emit(record, args)
            notify_asset_done(pm, path=path, record=record, outputs=record_outputs(record))  # lida_asset_done hooks
            records.append(record)
            bar.update(1)
    finally:
        bar.close()
        stack.close()
        if manifests is not None:
            manifests.close()
    if args.output_format == "json":
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return EXIT_FILE_ERRORS if errors else EXIT_OK


def emit(record: dict, args: argparse.Namespace) -> None:
    if args.output_format == "jsonl":
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
    elif args.output_format == "text":  # names escaped (textsafe): a newline in one must not forge a line
        from .textsafe import printable as esc

        if record["status"] != "ok":
            print(f"{esc(record['path'])}\terror\t{esc(record['error'])}", flush=True)
        else:
            gen = esc(record["generator"] or "-")
            score = f"{record['score']:.3f}" if record["score"] is not None else "-"
            top = record["neighbors"][0] if record["neighbors"] else None
            near = f"\tnearest {esc(top['generator'])} ({top['similarity']:.3f})" if top else ""
            print(f"{esc(record['path'])}\t{record['verdict']}\t{gen}\t{score}{near}", flush=True)


# -- register / generators ---------------------------------------------------------------
def cmd_register(args: argparse.Namespace) -> int:
    import sqlite3

    from .decode import decode_file
    from .errors import InputError, StoreError
    from .store import ExemplarStore, user_store_path
    from .textsafe import printable as esc

    encoder = _open_encoder(args)
    path = user_store_path(args.store)
    errors = added = 0
    with ExemplarStore(path, create=True) as store:
        store.check_model(encoder)
        store.add_generator(args.generator, args.family, args.notes)
        for p, err in expand_paths(args.paths, args.recursive):
            try:
                if err:
                    raise InputError(p, err)
                new = store.register(encoder, decode_file(p), args.generator, args.family)
                added += new
                print(f"{esc(p)}\t{'registered' if new else 'already registered'}\t{esc(args.generator)}")
            except (InputError, StoreError, sqlite3.Error, OSError) as exc:  # one file's error, never a traceback
                errors += 1
                print(f"{esc(p)}\terror\t{esc(exc)}", file=sys.stderr)
        print(f"{added} exemplar(s) added to {args.generator!r} in {path}", file=sys.stderr)
    return EXIT_FILE_ERRORS if errors else EXIT_OK


def cmd_generators(args: argparse.Namespace) -> int:
    from .store import open_stack

    stack = open_stack(_open_encoder(args), args.store, use_default=not args.no_default_store)
    try:
        gens = stack.generators()
    finally:
        stack.close()
    if args.json:
        print(json.dumps([g.__dict__ for g in gens], indent=2))
    else:
        for g in gens:
            print(f"{g.name}\t{g.family or '-'}\t{g.exemplars} exemplar(s)\t{g.store}")
        if not gens:
            print("no generators registered", file=sys.stderr)
    return EXIT_OK


# -- store ---------------------------------------------------------------------------------
def cmd_store(args: argparse.Namespace) -> int:
    from .store import ExemplarStore, bundled_store_path, user_store_path

    path = user_store_path(args.store)
    if args.store_cmd == "info":
        infos = []
        for p, ro in ((path, False), (bundled_store_path(), True)):
            if p.exists():
                with ExemplarStore(p, readonly=True, immutable=ro) as s:
                    infos.append(s.info() | {"role": "default" if ro else "user"})
            else:
                infos.append({"path": str(p), "role": "default" if ro else "user", "exists": False})
        print(json.dumps(infos, indent=2))
        return EXIT_OK
    if args.store_cmd == "reembed":
        encoder = _open_encoder(args)
        with ExemplarStore(path) as s:
            n = s.reembed(encoder, progress=True)
        print(f"re-embedded {n} exemplar(s) in {path} with model {encoder.model_id}")
        return EXIT_OK
    if args.store_cmd == "remove":
        with ExemplarStore(path) as s:
            n = s.remove_generator(args.generator)
        print(f"removed generator {args.generator!r} and {n} exemplar(s) from {path} (a backup copy was kept)")
        return EXIT_OK
    if args.store_cmd == "export":
        with ExemplarStore(path, readonly=True) as s:
            dest = s.backup_to(args.dest)
        print(f"exported {path} to {dest}")
        return EXIT_OK
    if args.store_cmd == "import":
        encoder = _open_encoder(args)
        with ExemplarStore(args.source, readonly=True) as src, ExemplarStore(path, create=True) as dst:
            added, skipped = dst.import_from(src, encoder, set(args.generator) if args.generator else None)
        print(f"imported {added} exemplar(s) from {args.source} into {path} ({skipped} already there)")
        return EXIT_OK
    raise AssertionError(args.store_cmd)


# -- doctor ----------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(args)


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lida",
        description="Is this image AI-generated, and by which registered generator? (LIDA: attribution as retrieval)",
        epilog="exit codes: 0 ok, 1 some files failed, 2 usage error, 3 setup error (model/store), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"lida-plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("attribute", help="detect and attribute images", description="Detect and attribute images.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders; - reads paths from stdin")
    p.add_argument("-r", "--recursive", action="store_true", help="walk folders")
    p.add_argument("-k", "--top-k", type=int, default=5, help="registered generators to list per image (default 5)")
    p.add_argument(
        "--force", action="store_true", help="give a verdict even when the fingerprint is unreliable (lossy JPEG, ...)"
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json", dest="output_format", action="store_const", const="json", help="one JSON array at the end"
    )
    fmt.add_argument(
        "--jsonl",
        dest="output_format",
        action="store_const",
        const="jsonl",
        help="one JSON record per line, as they come",
    )
    p.set_defaults(output_format="text", func=cmd_attribute)
    _add_model_args(p)
    _add_store_args(p)
    from .manifest import add_manifest_args

    add_manifest_args(p)

    p = sub.add_parser(
        "register",
        help="register exemplars of a generator",
        description="Register exemplar images of a generator into the user store.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--generator", "-g", required=True, help="generator name, e.g. sd-1.5")
    p.add_argument("--family", "-f", help="generator family, e.g. stable-diffusion-1")
    p.add_argument("--notes", help="free-text notes for the generator")
    p.add_argument("-r", "--recursive", action="store_true")
    p.set_defaults(func=cmd_register)
    _add_model_args(p)
    _add_store_args(p)

    p = sub.add_parser("generators", help="list registered generators")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_generators)
    _add_model_args(p)
    _add_store_args(p)

    p = sub.add_parser("store", help="inspect and maintain exemplar stores")
    ssub = p.add_subparsers(dest="store_cmd", required=True, metavar="ACTION")
    s = ssub.add_parser("info", help="the user and default stores: ids, model, counts")
    s.add_argument("--store")
    s = ssub.add_parser("reembed", help="re-embed the user store with the current model (keeps a backup)")
    s.add_argument("--store")
    _add_model_args(s)
    s = ssub.add_parser("remove", help="remove a generator and its exemplars from the user store (keeps a backup)")
    s.add_argument("generator")
    s.add_argument("--store")
    s = ssub.add_parser("export", help="write a consistent copy of the user store to DEST")
    s.add_argument("dest")
    s.add_argument("--store")
    s = ssub.add_parser("import", help="merge exemplars from another store file into the user store")
    s.add_argument("source")
    s.add_argument("--store")
    s.add_argument("--generator", action="append", help="only this generator (repeatable)")
    _add_model_args(s)
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("doctor", help="check providers, model, stores and versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)
    _add_model_args(p)
    _add_store_args(p)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _extra_commands() -> list:
    """Subcommands defined in other modules (each a function taking the subparsers object)."""
    out = []
    for module, func in _EXTRA_COMMAND_SPECS:
        try:
            mod = __import__(module, fromlist=[func])
        except ImportError as exc:  # a missing optional piece must not break the core CLI
            log.debug("subcommands from %s unavailable: %s", module, exc)
            continue
        out.append(getattr(mod, func))
    return out


#: ``(module, function)``: modules that add subcommands (manifest keys/verify, watch, eval).
_EXTRA_COMMAND_SPECS: list[tuple[str, str]] = [
    ("lida_plugin.keys", "add_commands"),
    ("lida_plugin.verify", "add_commands"),
    ("lida_plugin.watch", "add_commands"),
    ("lida_plugin.evaluate.cli", "add_commands"),
]
_EXTRA_COMMANDS = _extra_commands()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except LidaError as exc:
        print(f"lida: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("lida: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
