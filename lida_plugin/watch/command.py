"""``lida watch``: the command line of the watcher."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .. import hookimpl
from ..cli_options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MANIFEST_MODES,
    add_force_arg,
    add_model_args,
    add_signing_args,
    add_store_args,
    open_encoder,
    top_k_arg,
)
from ..cores import check_parallel
from ..errors import LidaError
from .config import WatchConfig
from .logs import event, setup_logging


# -- command line ---------------------------------------------------------------------------
def manifest_writer_for(args: argparse.Namespace, encoder, pm=None):
    """The C2PA :class:`~lida_plugin.manifest.ManifestWriter` for ``--manifest sidecar|embed``, or None."""
    if args.manifest == "none":
        return None
    if args.out is None:
        raise LidaError(f"--manifest {args.manifest} needs --out OUT_DIR (manifests are written beside the reports)")
    try:
        from ..keys import load_signing_config
        from ..manifest import ManifestWriter
    except ImportError as exc:
        raise LidaError(f"--manifest {args.manifest}: this installation has no C2PA manifest writer ({exc})") from None
    return ManifestWriter(
        load_signing_config(args.keys),
        mode=args.manifest,
        out_dir=args.out,
        policy=args.source_type_policy,
        model_sha256=getattr(encoder, "sha256", None),
        pm=pm,
    )


@hookimpl
def lida_register_commands(subparsers: argparse._SubParsersAction, pm) -> None:
    sub = subparsers
    p = sub.add_parser(
        "watch",
        help="watch a drop folder and attribute every image that lands in it",
        description="Watch IN_DIR and attribute every complete image once: one JSON report per asset in OUT_DIR, "
        "bad files to quarantine, a journal for exactly-once across restarts. SIGINT/SIGTERM finish the files "
        "in flight and exit 0.",
    )
    p.add_argument("in_dir", metavar="IN_DIR", help="the drop folder")
    p.add_argument("--out", metavar="OUT_DIR", help="write <asset file name>.json here (default: JSON lines on stdout)")
    p.add_argument(
        "--manifest",
        choices=MANIFEST_MODES,
        default="none",
        help="also write a C2PA manifest per asset (needs the manifest writer; default none)",
    )
    add_signing_args(p)
    p.add_argument("--workers", type=int, default=2, help="decode workers sharing the one model session (default 2)")
    p.add_argument(
        "--quarantine", metavar="DIR", help="copy files that cannot be analysed here, with <name>.error.json"
    )
    p.add_argument(
        "--move-processed",
        metavar="DIR",
        help="move analysed originals here (and bad ones into the quarantine) instead of leaving them",
    )
    p.add_argument("-r", "--recursive", action="store_true", help="watch subfolders too")
    p.add_argument(
        "--journal", metavar="FILE", help="SQLite journal (default OUT_DIR/.lida-watch.sqlite, else IN_DIR/)"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds a file's size and mtime must stay unchanged before it is read (default 1.0)",
    )
    p.add_argument(
        "--close-settle", type=float, default=0.1, help="the same after a close-after-write event (Linux) (default 0.1)"
    )
    p.add_argument("--rescan", type=float, default=60.0, help="full rescan interval in seconds (default 60)")
    p.add_argument(
        "--stats-interval", type=float, default=60.0, help="seconds between throughput log lines (default 60)"
    )
    p.add_argument("--polling", action="store_true", help="poll instead of OS events (network shares: NFS, CIFS)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of key=value text")
    p.add_argument(
        "-k", "--top-k", type=top_k_arg, default=5, help="registered generators to list per image (default 5)"
    )
    add_force_arg(p)
    p.set_defaults(func=cmd_watch)
    add_model_args(p)
    add_store_args(p)


def cmd_watch(args: argparse.Namespace) -> int:
    from ..attribute import Attributor
    from ..store import open_stack
    from .service import Watcher

    setup_logging(args.log_json)
    try:
        check_parallel(args.workers, "--workers", low=1)
    except ValueError as exc:
        print(f"lida watch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.settle < 0 or args.close_settle < 0 or args.rescan <= 0 or args.stats_interval <= 0:
        print("lida watch: error: --settle and --close-settle must be >= 0, --rescan and --stats-interval > 0",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.manifest != "none" and not args.out:
        print(f"lida watch: error: --manifest {args.manifest} needs --out OUT_DIR (manifests go beside the reports)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        cfg = _config(args)
    except ValueError as exc:
        print(f"lida watch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    encoder = open_encoder(args)
    writer = manifest_writer_for(args, encoder, args.pm)  # keys are checked before anything is watched
    stack = open_stack(encoder, args.store, use_default=not args.no_default_store)
    attributor = Attributor(encoder, stack, top_k=args.top_k, force=args.force)
    stop = threading.Event()
    signals = {"n": 0}

    def on_signal(signum, frame) -> None:
        signals["n"] += 1
        if signals["n"] > 1:
            print("lida watch: second signal, exiting without finishing", file=sys.stderr)
            os._exit(EXIT_INTERRUPTED)
        event(logging.INFO, "stopping", signal=signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        Watcher(cfg, attributor, args.pm, manifest_writer=writer).run(stop)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        stack.close()
        if writer is not None:
            writer.close()
    return EXIT_OK


def _config(args: argparse.Namespace) -> WatchConfig:
    return WatchConfig(
        in_dir=args.in_dir,
        out_dir=args.out,
        quarantine=args.quarantine,
        move_processed=args.move_processed,
        manifest=args.manifest,
        workers=args.workers,
        settle=args.settle,
        close_settle=args.close_settle,
        rescan=args.rescan,
        stats_interval=args.stats_interval,
        recursive=args.recursive,
        polling=args.polling,
        journal=args.journal,
    )
