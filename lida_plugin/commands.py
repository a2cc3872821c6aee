"""lida's own commands (``attribute``, ``register``, ``generators``, ``store``, ``doctor``), added the way
any plugin adds commands: through the ``lida_register_commands`` hook. ``keys``, ``verify``,
``watch`` and ``eval`` are built-in plugins of their own modules (see
:data:`lida_plugin.manager.DEFAULT_PLUGINS`).

Parsers are built without importing anything heavy; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator

from . import hookimpl
from .cli_options import (
    EXIT_FILE_ERRORS,
    EXIT_OK,
    UsageError,
    add_force_arg,
    add_manifest_args,
    add_model_args,
    add_store_args,
    check_manifest_args,
    expand_paths,
    open_encoder,
    top_k_arg,
)
from .textsafe import utf8_safe

log = logging.getLogger("lida")


# -- attribute ---------------------------------------------------------------------------
def cmd_attribute(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .attribute import Attributor, error_result
    from .manager import notify_asset_done, record_outputs
    from .store import open_stack

    manifest_mode = check_manifest_args(args)
    encoder = open_encoder(args)
    manifests = None
    if manifest_mode != "none":  # keys are checked here, before any asset is touched
        from .manifest import writer_from_args

        manifests = writer_from_args(args, encoder, pm=args.pm)
    pm = args.pm
    stack = open_stack(encoder, args.store, use_default=not args.no_default_store)
    attributor = Attributor(encoder, stack, top_k=args.top_k, force=args.force)
    items = list(expand_paths(args.paths, args.recursive))
    if not items:
        log.error("no files to analyse")
        if args.output_format == "json":
            sys.stdout.write("[]\n")  # still a JSON document: a reader parses an empty list, not nothing
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
        json.dump(utf8_safe(records), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return EXIT_FILE_ERRORS if errors else EXIT_OK


def emit(record: dict, args: argparse.Namespace) -> None:
    if args.output_format == "jsonl":
        sys.stdout.write(json.dumps(utf8_safe(record)) + "\n")  # a name that is not UTF-8: \xHH (textsafe)
        sys.stdout.flush()
    elif args.output_format == "text":  # names escaped (textsafe): a newline in one must not forge a line
        from .textsafe import printable as esc

        if record["status"] != "ok":
            print(f"{esc(record['path'])}\terror\t{esc(record['error'])}", flush=True)
        else:
            fam = record.get("family")
            gen = esc(record["generator"] or (f"family:{fam}" if fam and record["verdict"] == "ai-generated" else "-"))
            score = f"{record['score']:.3f}" if record["score"] is not None else "-"
            top = record["neighbors"][0] if record["neighbors"] else None
            near = f"\tnearest {esc(top['generator'])} ({top['similarity']:.3f})" if top else ""
            known = "\tself-match: a registered exemplar" if record.get("exact_match") else ""
            print(f"{esc(record['path'])}\t{record['verdict']}\t{gen}\t{score}{near}{known}", flush=True)


# -- serve -----------------------------------------------------------------------------------
#: The longest ``lida serve`` request line read (a Linux path is at most 4 KiB); a longer one is skipped in
#: bounded pieces and answered with an error record (a 300 MB line used to take 3.9 GB and echo it back).
MAX_REQUEST_BYTES = 1 << 16


def serve_lines(stream) -> Iterator[tuple[str | None, str | None]]:
    """``(line, None)`` for each line of the binary ``stream`` (undecodable bytes kept as a file name keeps
    them), or ``(its first 200 bytes, error)`` for a line longer than :data:`MAX_REQUEST_BYTES`, never read
    whole."""
    while True:
        raw = stream.readline(MAX_REQUEST_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_REQUEST_BYTES and not raw.endswith(b"\n"):
            while (rest := stream.readline(MAX_REQUEST_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield os.fsdecode(raw[:200]), f"request line longer than {MAX_REQUEST_BYTES} bytes"
            continue
        yield os.fsdecode(raw.rstrip(b"\r\n")), None


def serve_request(line: str) -> tuple[str | None, str | None]:
    """``(path, error)`` of one ``lida serve`` input line: a path, or a JSON object with a string ``path``
    (a line that starts with ``{`` but is no JSON is a path when such a file exists: ``{draft}.png``)."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None, 'empty request (send a path, or a JSON object with a string "path")'
    if not line.lstrip().startswith("{"):
        return line, None
    try:
        req = json.loads(line)
    except ValueError as exc:
        if os.path.lexists(line):
            return line, None
        return None, f"not a JSON object: {exc}"
    if not isinstance(req, dict) or not isinstance(req.get("path"), str) or not req["path"]:
        return None, 'a JSON request needs a non-empty string "path"'
    return req["path"], None


def cmd_serve(args: argparse.Namespace) -> int:
    """One warm process: read a request line, attribute, write the record line, flush, repeat until EOF."""
    from .attribute import Attributor, error_result
    from .manager import notify_asset_done, record_outputs
    from .store import open_stack

    encoder = open_encoder(args)
    stack = open_stack(encoder, args.store, use_default=not args.no_default_store)
    attributor = Attributor(encoder, stack, top_k=args.top_k, force=args.force)
    try:
        for line, err in serve_lines(sys.stdin.buffer):  # one answer per line, blank lines too
            path = None
            if err is None:
                path, err = serve_request(line)
            if err is None:
                record = attributor.attribute_file(path).to_dict()
            else:
                shown = (line or "").strip()[:200]
                record = error_result(shown, err, attributor.model_id, attributor.store_id).to_dict()
            sys.stdout.write(json.dumps(utf8_safe(record)) + "\n")
            sys.stdout.flush()
            if path is not None:
                notify_asset_done(args.pm, path=path, record=record, outputs=record_outputs(record))
    finally:
        stack.close()
    return EXIT_OK


# -- register / generators ---------------------------------------------------------------
def cmd_register(args: argparse.Namespace) -> int:
    import sqlite3

    from .decode import decode_file
    from .errors import InputError, StoreError
    from .store import ExemplarStore, user_store_path
    from .textsafe import printable as esc

    encoder = open_encoder(args)
    path = user_store_path(args.store)
    errors = added = 0
    if not args.generator.strip():
        raise UsageError("-g/--generator needs a non-empty name")
    with ExemplarStore(path, create=True, keep=args.keep) as store:
        store.check_model(encoder)
        existed = any(g.name == args.generator.strip() for g in store.generators())
        store.add_generator(args.generator, args.family, args.notes)
        for p, err in expand_paths(args.paths, args.recursive):
            try:
                if err:
                    raise InputError(p, err)
                decoded = decode_file(p)
                new = store.register(encoder, decoded, args.generator, args.family)
                added += new
                print(f"{esc(p)}\t{'registered' if new else 'already registered'}\t{esc(args.generator)}")
                if new and not decoded.reliable:  # kept (the user chose it) but said: it will match poorly
                    log.warning("%s: registered, but its low bits are not the generator's (%s): a weak exemplar",
                                esc(p), "; ".join(decoded.reasons) or "lossy or re-encoded")  # fmt: skip
            except (InputError, StoreError, sqlite3.Error, OSError) as exc:  # one file's error, never a traceback
                errors += 1
                print(f"{esc(p)}\terror\t{esc(exc)}", file=sys.stderr)
        if not existed and not any(g.name == args.generator.strip() and g.exemplars for g in store.generators()):
            store.remove_generator(args.generator.strip(), backup=False)  # made by this call, nothing in it
            print(f"no exemplar registered; generator {args.generator!r} not created", file=sys.stderr)
        print(f"{added} exemplar(s) added to {args.generator!r} in {path}", file=sys.stderr)
        if added:
            log.info("index: %s", store.update_index())
    return EXIT_FILE_ERRORS if errors else EXIT_OK


def cmd_generators(args: argparse.Namespace) -> int:
    from .store import open_stack
    from .textsafe import printable as esc

    stack = open_stack(open_encoder(args), args.store, use_default=not args.no_default_store)
    try:
        gens = stack.generators()
    finally:
        stack.close()
    if args.json:
        print(json.dumps([g.__dict__ for g in gens], indent=2))
    else:
        for g in gens:
            print(f"{esc(g.name)}\t{esc(g.family or '-')}\t{g.exemplars} exemplar(s)\t{esc(g.store)}")
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
        encoder = open_encoder(args)
        with ExemplarStore(path) as s:
            n = s.reembed(encoder, progress=True)
            log.info("index: %s", s.update_index())
        print(f"re-embedded {n} exemplar(s) in {path} with model {encoder.model_id}")
        return EXIT_OK
    if args.store_cmd == "remove":
        with ExemplarStore(path) as s:
            if not any(g.name == args.generator for g in s.generators()):  # a typo: usage, like store import
                raise UsageError(f"{path} has no generator {args.generator!r} (lida generators lists them)")
            n = s.remove_generator(args.generator)
            log.info("index: %s", s.update_index())
        print(f"removed generator {args.generator!r} and {n} exemplar(s) from {path} (a backup copy was kept)")
        return EXIT_OK
    if args.store_cmd == "export":
        with ExemplarStore(path, readonly=True) as s:
            dest = s.backup_to(args.dest)
        print(f"exported {path} to {dest}")
        return EXIT_OK
    if args.store_cmd == "import":
        encoder = open_encoder(args)
        with ExemplarStore(args.source, readonly=True) as src:
            missing = sorted(set(args.generator or ()) - {g.name for g in src.generators()})
            if missing:  # a typo imported nothing and said "imported 0": name it instead
                raise UsageError(f"{args.source} has no generator {', '.join(map(repr, missing))}"
                                 " (lida generators --store SOURCE lists them)")  # fmt: skip
            with ExemplarStore(path, create=True) as dst:
                added, skipped = dst.import_from(src, encoder, set(args.generator) if args.generator else None)
                log.info("index: %s", dst.update_index())
        print(f"imported {added} exemplar(s) from {args.source} into {path} ({skipped} already there)")
        return EXIT_OK
    if args.store_cmd == "index":
        with ExemplarStore(path) as s:
            print(f"{path}: index {s.update_index(args.kind, rebuild=args.rebuild)}")
        return EXIT_OK
    raise AssertionError(args.store_cmd)


# -- doctor ----------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(args)


@hookimpl
def lida_register_commands(subparsers: argparse._SubParsersAction, pm) -> None:
    for add in (_attribute_parser, _register_parsers, _store_parser, _serve_parser, _doctor_parser):
        add(subparsers)


def _attribute_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attribute", help="detect and attribute images", description="Detect and attribute images.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders; - reads paths from stdin")
    p.add_argument("-r", "--recursive", action="store_true", help="walk folders")
    p.add_argument(
        "-k", "--top-k", type=top_k_arg, default=5, help="registered generators to list per image (default 5)"
    )
    add_force_arg(p)
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
    add_model_args(p)
    add_store_args(p)
    add_manifest_args(p)


def _register_parsers(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--keep",
        choices=("none", "lowbits", "raw"),
        help="what new exemplars keep for `lida store reembed` (a store setting; new stores: none, ~1 KB an"
        " exemplar, re-embedding then needs the original images; lowbits ~70 KB; raw ~100 KB, any model)",
    )
    p.set_defaults(func=cmd_register)
    add_model_args(p)
    add_store_args(p)

    p = sub.add_parser("generators", help="list registered generators")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_generators)
    add_model_args(p)
    add_store_args(p)


def _store_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect and maintain exemplar stores")
    ssub = p.add_subparsers(dest="store_cmd", required=True, metavar="ACTION")
    s = ssub.add_parser("info", help="the user and default stores: ids, model, counts")
    s.add_argument("--store")
    s = ssub.add_parser("reembed", help="re-embed the user store with the current model (keeps a backup)")
    s.add_argument("--store")
    add_model_args(s)
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
    add_model_args(s)
    s = ssub.add_parser("index", help="build or update the approximate index of a large user store (docs/scale.md)")
    s.add_argument("--store")
    s.add_argument("--kind", choices=("faiss-ivf-sq8", "usearch-hnsw-i8"), help="index kind (default: faiss-ivf-sq8)")
    s.add_argument("--rebuild", action="store_true", help="build it anew instead of updating it")
    p.set_defaults(func=cmd_store)


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="keep one process warm: a path per line on stdin, a JSON record per line on stdout",
        description='Attribute one asset per input line (a path, or a JSON object with a "path"), answering each'
        " with one JSON record line, flushed, before reading the next: a host that would otherwise start one"
        " process per asset pays the start once. Ends at end of input (exit 0).",
    )
    p.add_argument(
        "-k", "--top-k", type=top_k_arg, default=5, help="registered generators to list per image (default 5)"
    )
    add_force_arg(p)
    p.set_defaults(func=cmd_serve)
    add_model_args(p)
    add_store_args(p)


def _doctor_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check providers, model, stores and versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)
    add_model_args(p)
    add_store_args(p)
