"""The Ray engine (``--engine ray``; ``pip install "lida-plugin[ray]"``): the same job on Ray Data.

One dataset pipeline, streamed::

    from_items(paths)                       the asset list (the driver has it: resume needs it)
      [.map_batches(prepare_batch, ...)]    next to GPU actors only: read + decode + crops as CPU tasks
      .map_batches(EncodeStage, ...)        (read + decode + crops on the CPU,) embed + detect + retrieve
                                            + verdict: an actor pool, one ORT session per actor
      .iter_batches()                       records back to the driver, which writes the Parquet parts

The encoder is a callable class, so Ray Data runs it in an actor pool (one actor per CPU, or one per
GPU: ``num_gpus=1`` each when the encoder is on CUDA, i.e. the ``gpu`` extra and a GPU in the
cluster). On the CPU each actor also reads and decodes its batches (no crops through the object
store, one process per core); next to GPU actors that is a stage of CPU tasks of its own. Ray
restarts an actor that dies and reruns its batch up to :data:`TASK_RETRIES` times, so a killed actor
loses nothing; a batch that keeps killing its actor is given up and its assets are run one at a time,
so one asset that crashes a decoder every time becomes an error row (:meth:`RayEngine.run`). The driver
writes each record once (:class:`~lida_plugin.batch.sink.PartSink`). ``address`` (or ``RAY_ADDRESS``)
joins an existing cluster; otherwise a local Ray starts with ``num_cpus``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import LidaError
from .worker import JobConfig, build_attributor, died_record, limit_threads, pack, prepare_one, unpack

log = logging.getLogger(__name__)


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise LidaError(
            'lida batch --engine ray needs Ray Data: pip install "lida-plugin[ray]" (or pip install ".[ray]")'
        ) from None
    return ray


#: Seconds to wait for a Ray cluster's address to accept a connection before giving up.
CONNECT_TIMEOUT = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """``LidaError`` unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection within
    ``timeout``: Ray itself retries an unreachable GCS for minutes, printing warnings, which looks
    like a hang. ``auto``, ``local`` and addresses without a port are left to Ray."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise LidaError(
            f"lida batch: cannot reach the Ray cluster at {address!r} ({reason}); check --ray-address /"
            " RAY_ADDRESS, or leave both unset to start a local Ray"
        ) from None


#: Times Ray Data reruns a batch whose actor died (SIGKILL, out of memory, a crash in a decoder)
#: before that batch is given up; its assets are then run one at a time (:meth:`RayEngine.run`), so
#: an asset that kills its actor every time becomes an error row instead of an endless retry loop
#: (Ray Data's default for actor pools is to retry forever).
TASK_RETRIES = 2

#: Per process: the attributor prepare_batch uses for each job config.
_PREPARERS: dict[JobConfig, object] = {}


def prepare_batch(batch: dict[str, np.ndarray], cfg: JobConfig) -> dict[str, np.ndarray]:
    """Read + decode + crop a batch of paths: the CPU tasks next to GPU encoder actors (on the CPU the
    actors do it themselves). One decode-only attributor per worker process gives the crop geometry."""
    att = _PREPARERS.get(cfg)
    if att is None:
        limit_threads(cfg.threads)
        att = _PREPARERS[cfg] = build_attributor(cfg, with_store=False)
    blobs = [pack(prepare_one(att, os.fsdecode(p))) for p in batch["path"]]
    return {"path": batch["path"], "prepared": np.array(blobs, dtype=object)}


class EncodeStage:
    """Embed, detect, retrieve and judge a batch of prepared assets: one ORT session per actor."""

    def __init__(self, cfg: JobConfig) -> None:
        limit_threads(cfg.threads)
        self.att = build_attributor(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "prepared" in batch:  # from the prepare tasks (next to GPU actors)
            items = [unpack(b) for b in batch["prepared"]]
        else:  # on the CPU this actor reads and decodes too
            items = [prepare_one(self.att, os.fsdecode(p)) for p in batch["path"]]
        records = []
        for r in self.att.finish(items):
            if r.status != "ok":  # an error from the prepare stage: it had no store, this stage does
                r.model_id, r.store_id = self.att.model_id, self.att.store_id
            records.append(json.dumps(r.to_dict()))
        return {"path": batch["path"], "record": np.array(records, dtype=object)}


class RayEngine:
    """Attributes paths on Ray Data; :meth:`run` yields each path's record once."""

    name = "ray"

    def __init__(
        self,
        cfg: JobConfig,
        *,
        workers: int | None = None,
        address: str | None = None,
        chunk_size: int = 128,
        gpus: int | None = None,
    ) -> None:
        self.ray = require_ray()
        self.cfg = cfg
        self.workers = workers
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.chunk_size = max(1, chunk_size)
        self.gpus = gpus
        self._started = False
        self._shape: tuple[int, int] | None = None

    def start(self) -> None:
        """Connect to (or start) Ray now, before the caller lists the assets."""
        if self._shape is None:
            self._shape = self._init()

    def _init(self) -> tuple[int, int]:
        """Connect or start Ray; ``(cpu actors per stage, gpu actors)``."""
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                check_reachable(self.address)
                try:
                    ray.init(address=self.address, **kwargs)
                except (ConnectionError, TimeoutError) as exc:  # e.g. "auto" with no Ray running here
                    raise LidaError(f"lida batch: cannot join the Ray cluster at {self.address!r}: {exc}") from None
            else:
                ray.init(num_cpus=self.workers, **kwargs)
                self._started = True
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is the one bar
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 1))
        n = max(1, min(self.workers or cpus, cpus))
        gpus = 0
        if self.cfg.device in ("auto", "cuda", "tensorrt"):
            from ..encoder import choose_providers

            want = self.gpus if self.gpus is not None else int(res.get("GPU", 0))
            try:
                on_cuda = choose_providers(self.cfg.device)[0] != "CPUExecutionProvider"
            except LidaError:
                on_cuda = False
            gpus = want if on_cuda else 0
        return n, gpus

    def dataset(self, paths: Sequence[str], batch_size: int | None = None):
        """The pipeline (not yet executed), in batches of ``batch_size`` assets (default: the chunk size)."""
        ray = self.ray
        self.start()
        n, gpus = self._shape
        bs = batch_size or self.chunk_size
        # as bytes: Arrow's strings must be UTF-8 and a file name need not be (Python keeps its other bytes as
        # surrogates, which os.fsencode turns back into them); the stages os.fsdecode it again
        items = [{"path": os.fsencode(p)} for p in paths]
        # a batch size of one isolates each asset in a task of its own: one block per asset
        ds = ray.data.from_items(items, override_num_blocks=len(items)) if bs == 1 else ray.data.from_items(items)
        if gpus:  # read + decode + crops as CPU tasks beside the GPU actors (decode is then the bound)
            ds = ds.map_batches(prepare_batch, fn_kwargs={"cfg": self.cfg}, batch_size=bs, batch_format="numpy",
                                num_cpus=1, max_retries=TASK_RETRIES)  # fmt: skip
        # On the CPU one actor per core reads, decodes and encodes its batches (EncodeStage prepares
        # what arrives unprepared): no crops through the object store, one process per core.
        return ds.map_batches(
            EncodeStage,
            fn_constructor_args=(self.cfg,),
            batch_size=bs,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=gpus or n),
            max_task_retries=TASK_RETRIES,
            **({"num_gpus": 1} if gpus else {"num_cpus": 1}),
        )

    def _records(self, paths: Sequence[str], batch_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every record Ray Data delivers; a batch still failing after :data:`TASK_RETRIES` reruns is
        dropped (``DataContext.max_errored_blocks``, unlimited for this job) rather than failing the job."""
        ctx = self.ray.data.DataContext.get_current()
        before, ctx.max_errored_blocks = ctx.max_errored_blocks, -1
        try:
            ds = self.dataset(paths, batch_size)
        finally:
            ctx.max_errored_blocks = before  # the dataset keeps its own copy of the context
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for rec in batch["record"]:
                yield json.loads(rec)

    def run(self, paths: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Each path's record once. Assets of a batch that Ray gave up on (its actor died
        1 + :data:`TASK_RETRIES` times) are run again one per batch; one that still kills its actor
        gets an error record naming the reason, and no other asset is blamed."""
        if not paths:
            self.close()
            return
        try:
            seen: set[str] = set()
            for rec in self._records(paths):
                seen.add(rec["path"])
                yield rec
            lost = [p for p in paths if p not in seen]
            if lost:
                log.warning("%d asset(s) lost with Ray actors that died; running them one at a time", len(lost))
                for rec in self._records(lost, batch_size=1):
                    seen.add(rec["path"])
                    yield rec
            for p in lost:
                if p not in seen:
                    yield died_record(p, "Ray actor", 1 + TASK_RETRIES)
        finally:
            self.close()

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
            self._started = False
        self._shape = None
