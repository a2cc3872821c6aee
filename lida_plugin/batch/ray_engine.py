"""The Ray engine (``--engine ray``; ``pip install "lida-plugin[ray]"``): the same job on Ray Data.

One dataset pipeline, streamed::

    from_items(paths)                       the asset list (the driver has it: resume needs it)
      .map_batches(prepare_batch, ...)      read (local or pyarrow/fsspec) + decode + crops
      .map_batches(EncodeStage, ...)        embed + detect + retrieve + verdict: one ORT session per actor
      .iter_batches()                       records back to the driver, which writes the Parquet parts

The encoder is a callable class, so Ray Data runs it in an actor pool (one actor per CPU, or one per
GPU: ``num_gpus=1`` each when the encoder is on CUDA, i.e. the ``gpu`` extra and a GPU in the
cluster). The prepare stage is a function with the CPU actors' resources, so on the CPU Ray Data's
optimizer fuses it into the encoder actors (each reads, decodes and encodes its batches: no crops
through the object store, half the processes to start); next to GPU actors it runs as CPU tasks. Ray
restarts an actor that dies and retries its batch (Ray Data's defaults for actor pools), so a killed
actor loses nothing; the driver writes each record once (:class:`~lida_plugin.batch.sink.PartSink`).
``address`` (or ``RAY_ADDRESS``) joins an existing cluster; otherwise a local Ray starts with
``num_cpus``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import LidaError
from .worker import JobConfig, build_attributor, limit_threads, pack, prepare_one, unpack

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


#: Per process: the attributor prepare_batch uses for each job config.
_PREPARERS: dict[JobConfig, object] = {}


def prepare_batch(batch: dict[str, np.ndarray], cfg: JobConfig) -> dict[str, np.ndarray]:
    """Read + decode + crop a batch of paths (stage 1). A function, so Ray Data fuses it into the
    encoder actors when both ask for the same resources (CPU actors): one process per core reads and
    encodes, and no crops travel through the object store. With GPU actors it stays a stage of CPU
    tasks of its own. The crop geometry comes from the encoder actor's attributor when fused, else
    from one decode-only attributor per worker process."""
    att = _PREPARERS.get(cfg)
    if att is None:
        limit_threads(cfg.threads)
        att = _PREPARERS[cfg] = build_attributor(cfg, with_store=False)
    blobs = [pack(prepare_one(att, str(p))) for p in batch["path"]]
    return {"path": batch["path"], "prepared": np.array(blobs, dtype=object)}


class EncodeStage:
    """Embed, detect, retrieve and judge a batch of prepared assets: one ORT session per actor."""

    def __init__(self, cfg: JobConfig) -> None:
        limit_threads(cfg.threads)
        self.att = build_attributor(cfg)
        _PREPARERS.setdefault(cfg, self.att)  # a fused prepare stage in this actor uses this session too

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [unpack(b) for b in batch["prepared"]]
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

    def dataset(self, paths: Sequence[str]):
        """The pipeline (not yet executed)."""
        ray = self.ray
        self.start()
        n, gpus = self._shape
        ds = ray.data.from_items([{"path": p} for p in paths])
        # The same resources as a CPU encoder actor, so that Ray Data fuses the two stages on the CPU
        # (one actor per core does both; see prepare_batch); a GPU actor asks for a GPU instead.
        cpu = {"num_cpus": 1}
        ds = ds.map_batches(prepare_batch, fn_kwargs={"cfg": self.cfg}, batch_size=self.chunk_size,
                            batch_format="numpy", **cpu)  # fmt: skip
        return ds.map_batches(
            EncodeStage,
            fn_constructor_args=(self.cfg,),
            batch_size=self.chunk_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=gpus or n),
            **({"num_gpus": 1} if gpus else cpu),
        )

    def run(self, paths: Sequence[str]) -> Iterator[dict[str, Any]]:
        if not paths:
            self.close()
            return
        try:
            for batch in self.dataset(paths).iter_batches(batch_size=None, batch_format="numpy"):
                for rec in batch["record"]:
                    yield json.loads(rec)
        finally:
            self.close()

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
            self._started = False
        self._shape = None
