"""``lida batch SOURCE --out DEST``: attribute an archive into Parquet parts, resumably.

    lida batch /archive --out results/                       # local worker processes (all cores)
    lida batch s3://bucket/photos/ --out results/ --engine ray --ray-address auto

Exit codes as for ``lida attribute``: 0 all analysed, 1 some assets are error rows, 3 setup
error (model, store, DEST, SOURCE), 130 interrupted (committed parts are kept; rerun to finish).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any

from .. import hookimpl
from ..cli_options import UsageError, add_force_arg, add_model_args, add_signing_args, add_store_args, top_k_arg
from ..cores import check_parallel

log = logging.getLogger("lida.batch")

#: Crops per encoder call in a worker. One ORT thread runs small calls faster per crop (their
#: activations stay in the core's cache): bundled model, 512 real crops, median of 5 passes: 1.29 ms/crop
#: at 8, 1.44 at 16, 1.70 at 64 (docs/scale.md).
WORKER_BATCH = 8
#: Default assets per work unit: a pipe message to a local worker costs little; a Ray Data task costs
#: more, so its batches are larger (docs/scale.md).
LOCAL_CHUNK, RAY_CHUNK = 16, 128
#: Records that reach the driver within this many seconds of the first count as one delivery (``-v``).
FIRST_DELIVERY_S = 0.05


@hookimpl
def lida_register_commands(subparsers: argparse._SubParsersAction, pm) -> None:
    """``lida batch``. Long because it is one flat list of argparse options, each with its help text."""
    sub = subparsers
    p = sub.add_parser(
        "batch",
        help="attribute a whole archive into Parquet (resumable; local workers or Ray)",
        description="Attribute everything under SOURCE into Parquet parts under DEST. A rerun with the same DEST"
        " skips the assets already written and does the rest; each asset is written exactly once.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a folder, a glob ('photos/**/*.png'), a .txt/.csv/.parquet list of paths (in a .txt, lines starting"
        " with # are comments), or a URI (s3://bucket/dir/)",
    )
    p.add_argument("--out", required=True, metavar="DEST", help="folder for the Parquet parts (created if missing)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local processes (default) or Ray")
    p.add_argument(
        "--workers",
        type=int,
        help="local: worker processes (default: the cores); ray: actors per stage (default: the cluster's CPUs)",
    )
    p.add_argument(
        "--ray-address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else start a local one)"
    )
    p.add_argument("--limit", type=int, help="attribute at most N assets not yet done, then stop")
    p.add_argument("--part-size", type=int, default=1000, help="rows per Parquet part (default 1000)")
    p.add_argument("--part-seconds", type=float, default=60.0, help="commit a part at least this often (default 60 s)")
    p.add_argument(
        "--chunk-size", type=int,
        help="assets per work unit: per message to a local worker (default 16), per Ray Data batch (default 128,"
        " which amortises Ray's cost per task: 86 img/s against 69 at 16 on 2 cores)",
    )  # fmt: skip
    p.add_argument(
        "-k", "--top-k", type=top_k_arg, default=5, help="registered generators to list per image (default 5)"
    )
    add_force_arg(p)
    add_model_args(
        p,
        device_default="cpu",
        device_help="execution provider per worker (default: $LIDA_DEVICE, else cpu; ray: cuda/auto puts the"
        " encoder actors on GPUs)",
        threads_default=1,
        threads_help="ONNX Runtime threads per worker (default 1)",
        batch_size_default=None,
        batch_size_help=f"crops per encoder call in a worker (default on the CPU {WORKER_BATCH}: with one thread,"
        " small calls run faster per crop than large ones, docs/scale.md; else 64)",
    )
    add_store_args(p)
    g = p.add_argument_group("provenance (C2PA)")
    g.add_argument(
        "--manifest",
        choices=["none", "sidecar"],
        default="none",
        help="also write a signed C2PA sidecar <stem>.c2pa per analysed asset (local assets only)",
    )
    g.add_argument("--sidecar-dir", metavar="DIR", help="folder for the sidecars (default: next to each asset)")
    add_signing_args(g)
    p.set_defaults(func=cmd_batch)


def _usage(msg: str) -> None:
    raise UsageError(msg)  # the command line prints it and exits 2


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # the same clean stop as ^C: commit what is done, stop the workers


def _check_args(args: argparse.Namespace) -> None:
    for name in ("limit", "workers", "part_size", "chunk_size", "threads", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "limit" else 1):
            _usage(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'limit' else '>= 1'}")
    joins_ray = args.engine == "ray" and (args.ray_address or os.environ.get("RAY_ADDRESS"))
    if not joins_ray:  # local workers, or a local Ray started with --workers CPUs; a cluster has its own cores
        try:
            check_parallel(args.workers, "--workers", low=1)
        except ValueError as exc:
            _usage(str(exc))
    if not args.part_seconds > 0:  # also NaN
        _usage("--part-seconds must be > 0")
    if args.sidecar_dir and args.manifest != "sidecar":
        _usage("--sidecar-dir needs --manifest sidecar")


def _job_config(args: argparse.Namespace):
    """The workers' :class:`JobConfig`, from paths alone (nothing opened yet: the workers start first)."""
    from ..encoder import resolve_model_path
    from ..store import user_store_path
    from .worker import JobConfig

    if args.batch_size is None:
        args.batch_size = WORKER_BATCH if args.device == "cpu" else 64
    user_store = user_store_path(args.store)
    return JobConfig(
        model=str(resolve_model_path(args.model)),
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
        # explicit paths: Ray workers on other nodes do not see this shell's LIDA_MODEL / LIDA_STORE
        store=str(user_store) if user_store.exists() else None,
        use_default_store=not args.no_default_store,
        top_k=args.top_k,
        force=args.force,
    )


def _open_job(args: argparse.Namespace, cfg):
    """``(encoder, model_id, store_id)``: the driver opens the model and the store itself, so a setup
    error is reported before any asset is touched and the results are stamped with their ids."""
    from ..encoder import Encoder
    from ..store import open_stack

    encoder = Encoder(cfg.model, device=args.device, threads=1, batch_size=args.batch_size)
    stack = open_stack(encoder, args.store, use_default=not args.no_default_store)
    store_id = stack.store_id
    stack.close()
    return encoder, encoder.model_id, store_id


def _sidecar_writer(args: argparse.Namespace, encoder, pm=None):
    if args.manifest != "sidecar":
        return None
    from ..keys import load_signing_config
    from ..manifest import ManifestWriter

    return ManifestWriter(
        load_signing_config(args.keys),
        mode="sidecar",
        out_dir=args.sidecar_dir,
        policy=args.source_type_policy,
        model_sha256=encoder.sha256,
        pm=pm,
    )


def _engine(args: argparse.Namespace, cfg) -> Any:
    if args.engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(cfg, workers=args.workers, address=args.ray_address, chunk_size=args.chunk_size or RAY_CHUNK)
    from .local import LocalEngine

    return LocalEngine(cfg, workers=args.workers, chunk_size=args.chunk_size or LOCAL_CHUNK)


def cmd_batch(args: argparse.Namespace) -> int:
    from ..errors import LidaError

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LidaError('lida batch writes Parquet and needs pyarrow: pip install "lida-plugin[batch]"') from None
    from .sink import PartSink
    from .sources import is_uri, list_assets

    t0 = time.monotonic()
    _check_args(args)
    cfg = _job_config(args)
    if args.engine == "ray":
        from .ray_engine import require_ray

        require_ray()  # a clear message before the listing, not after
    # Start the engine's workers first: their start-up (imports, model, store) overlaps the driver's
    # own setup and listing. Every path out of here that does not reach _run stops them.
    engine = _engine(args, cfg)
    try:
        engine.start()
        encoder, model_id, store_id = _open_job(args, cfg)
        manifests = _sidecar_writer(args, encoder, args.pm)
        assets = list_assets(args.source)
        if manifests is not None and any(is_uri(a) for a in assets):
            _usage("--manifest sidecar needs local assets (sidecars are written next to them or in --sidecar-dir)")
        sink = PartSink(
            args.out, job={"model_id": model_id, "store_id": store_id}, part_rows=args.part_size,
            part_seconds=args.part_seconds,
        )  # fmt: skip
    except BaseException:
        engine.close()
        raise
    log.info("setup: engine started, model and store opened, %d asset(s) listed in %.2f s", len(assets),
             time.monotonic() - t0)  # fmt: skip
    todo = [a for a in assets if not sink.is_done(a)]
    skipped = len(assets) - len(todo)
    if args.limit is not None:
        todo = todo[: args.limit]
    print(
        f"lida batch: {len(assets)} asset(s) in {args.source}; {skipped} already in {args.out};"
        f" {len(todo)} to attribute with the {args.engine} engine",
        file=sys.stderr,
    )
    errors = _run(engine, todo, sink, manifests, (model_id, store_id), args.pm, t0)
    print(
        f"lida batch: wrote {sink.written} row(s) ({errors} error row(s)) to {args.out};"
        f" {len(sink.done)} asset(s) done in all",
        file=sys.stderr,
    )
    return 1 if errors else 0


def _run(engine, todo: list[str], sink, manifests, ids: tuple[str, str], pm, t0: float | None = None) -> int:
    """Records from the engine -> sidecars -> parts -> ``lida_asset_done``; the number of error rows.
    On ^C/SIGTERM (or any exception) the rows received are committed and the workers stopped.
    With ``-v`` it logs when the first records came (the engine's start-up, from ``t0``) and the rate
    of the records after that first delivery (a chunk or a Ray batch arrives at once), the two
    numbers that tell a fixed cost from a slow pipeline."""
    t0 = time.monotonic() if t0 is None else t0
    first: float | None = None
    n = n_first = 0
    from tqdm import tqdm

    from ..manager import notify_asset_done, record_outputs

    errors = 0

    def told(committed) -> None:  # lida_asset_done, once the asset's row is committed
        if committed is None:
            return
        part, records = committed
        for r in records:
            notify_asset_done(pm, path=r["path"], record=r, outputs=record_outputs(r) | {"report": str(part)})

    old = signal.signal(signal.SIGTERM, _sigterm)
    bar = tqdm(total=len(todo), unit="img", desc="lida batch", file=sys.stderr, dynamic_ncols=True, disable=None)
    stream = engine.run(todo)
    try:
        for record in stream:
            if record.get("model_id") is None:  # error records made outside an attributor
                record["model_id"], record["store_id"] = ids
            bad = record.get("status") != "ok"
            if manifests is not None and not manifests.apply(record):
                bad = True
            errors += bad
            told(sink.add(record))
            bar.update(1)
            n += 1
            if first is None:
                first = time.monotonic()
                log.info("first record %.2f s after the start (the engine's start-up)", first - t0)
            if n_first == n - 1 and time.monotonic() - first < FIRST_DELIVERY_S:
                n_first = n  # still the first delivery
    finally:
        stream.close()  # stops the workers (on ^C, too)
        bar.close()
        if first is not None:
            last = time.monotonic()
            rate = f"{(n - n_first) / (last - first):.1f} img/s" if n > n_first and last > first else "-"
            log.info("%d record(s) in %.2f s; %s after the first delivery (%d)", n, last - t0, rate, n_first)
        signal.signal(signal.SIGTERM, old)
        try:
            told(sink.close())
        finally:
            if manifests is not None:
                manifests.close()
    return errors
