"""The local engine: worker processes on this machine, each with one ONNX Runtime session.

Each worker (a ``spawn``-ed process: no state inherited from the driver) builds one
:class:`~lida_plugin.attribute.Attributor` and takes chunks of paths over its own pipe. It keeps
two chunks in hand: while the encoder runs on one (main thread, ``threads`` ORT threads), a
decode thread reads and prepares the next, so decoding overlaps inference. Results go back per
chunk; the driver (the caller of :meth:`LocalEngine.run`) writes them.

Failures: the driver knows which chunks each worker holds, so when a worker dies (killed,
out of memory, a crash in a native decoder) its chunks are handed out again, split into single
assets, each to an otherwise idle worker. An asset whose worker dies ``max_attempts`` times while
it alone is in hand becomes an error record naming that; no other asset is blamed for it, and
none is lost or returned twice. Workers ignore SIGINT: the driver decides, stops them and keeps
what it has.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from ..cores import usable_cores
from ..errors import LidaError
from .worker import JobConfig, build_attributor, died_record, limit_threads, prepare_one

log = logging.getLogger(__name__)

#: Chunks a worker holds at once (one being encoded, one being decoded).
DEPTH = 2
#: Workers that die before they are ready, in a row, before the engine gives up.
MAX_START_FAILURES = 3


def default_workers() -> int:
    return usable_cores()


@dataclass
class _Chunk:
    cid: int
    paths: list[str]
    attempts: int = 0
    solo: bool = False


@dataclass
class _Worker:
    proc: Any
    conn: Any
    ready: bool = False
    held: dict[int, _Chunk] = field(default_factory=dict)


@contextlib.contextmanager
def _sigint_ignored_by_children():
    """Processes started inside inherit SIGINT ignored; this process's own ^C waits (blocked) until the end."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield  # signal.signal works in the main thread only
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _worker_main(conn, cfg: JobConfig) -> None:
    """A worker process: one attributor; chunks in over ``conn``, records out, until ``None``."""
    from concurrent.futures import ThreadPoolExecutor

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles ^C and stops us
    limit_threads(cfg.threads)
    try:
        att = build_attributor(cfg)
    except Exception as exc:
        conn.send(("fatal", f"{type(exc).__name__}: {exc}" if not isinstance(exc, LidaError) else str(exc)))
        return
    conn.send(("ready", os.getpid()))
    pending: deque = deque()
    with ThreadPoolExecutor(max(1, cfg.decode_threads), thread_name_prefix="lida-decode") as pool:
        stop = False
        while True:
            # take the next chunk for decoding while the encoder works; block only with nothing in hand
            while not stop and len(pending) < DEPTH and (not pending or conn.poll()):
                try:
                    msg = conn.recv()
                except EOFError:  # the driver is gone
                    return
                if msg is None:
                    stop = True
                    break
                cid, paths = msg
                pending.append((cid, [pool.submit(prepare_one, att, p) for p in paths]))
            if not pending:
                break
            cid, futs = pending.popleft()
            records = [r.to_dict() for r in att.finish([f.result() for f in futs])]
            conn.send(("done", cid, records))


class LocalEngine:
    """Attributes paths with ``workers`` processes; :meth:`run` yields each path's record once."""

    name = "local"

    def __init__(
        self,
        cfg: JobConfig,
        *,
        workers: int | None = None,
        chunk_size: int = 16,
        max_attempts: int = 3,
        start_method: str = "spawn",
    ) -> None:
        self.cfg = cfg
        self.workers = max(1, workers or default_workers())
        self.chunk_size = max(1, chunk_size)
        self.max_attempts = max(1, max_attempts)
        self.ctx = mp.get_context(start_method)
        self.pool: list[_Worker] = []
        self.deaths = 0

    # -- process management --------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, self.cfg), name="lida-batch-worker", daemon=True)
        # ^C goes to the whole process group. A worker ignores it once _worker_main runs, but a spawned one
        # imports for a second before that, and a ^C then printed a KeyboardInterrupt traceback. An ignored
        # SIGINT is kept across exec and Python leaves it ignored, so the child starts with it ignored; ours
        # is blocked meanwhile, so a ^C in this window is delivered (to the restored handler) afterwards.
        with _sigint_ignored_by_children():
            proc.start()
        child.close()
        w = _Worker(proc, parent)
        self.pool.append(w)
        return w

    def start(self) -> None:
        """Start the workers now (they load the model while the caller lists the assets); :meth:`run`
        starts them itself if this was not called. Stop them with :meth:`close` if :meth:`run` is
        never called."""
        while len(self.pool) < self.workers:
            self._spawn()

    def close(self) -> None:
        self._stop_all(graceful=False)

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self.pool if w.proc.is_alive()]

    def _stop_all(self, graceful: bool) -> None:
        for w in self.pool:
            if graceful:
                try:
                    w.conn.send(None)
                except (OSError, EOFError):
                    pass
        deadline = time.monotonic() + (10 if graceful else 0)
        for w in self.pool:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
        self.pool = []

    # -- the run -------------------------------------------------------------------------------
    def run(self, paths: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Records for ``paths`` (each once, in completion order). Closing the generator (or an
        exception, or ^C in the caller) stops the workers; what was not yielded is not done."""
        todo: deque[_Chunk] = deque(
            _Chunk(i, list(paths[s : s + self.chunk_size])) for i, s in enumerate(range(0, len(paths), self.chunk_size))
        )
        remaining = len(todo)
        next_cid = len(todo)
        start_failures = 0
        graceful = False
        try:
            while len(self.pool) < min(self.workers, remaining):
                self._spawn()
            while remaining:
                self._assign(todo)
                handles = [w.conn for w in self.pool] + [w.proc.sentinel for w in self.pool]
                for h in wait(handles, timeout=5.0):
                    w = next((x for x in self.pool if h in (x.conn, x.proc.sentinel)), None)
                    if w is None:  # already handled in this round (its pipe and sentinel both fired)
                        continue
                    dead = False
                    try:  # everything it sent before it died counts: drain the pipe first
                        while w.conn.poll():
                            kind, *rest = w.conn.recv()
                            if kind == "ready":
                                w.ready = True
                                start_failures = 0
                            elif kind == "fatal":
                                raise LidaError(f"lida batch: a worker could not start: {rest[0]}")
                            elif kind == "done":
                                cid, records = rest
                                w.held.pop(cid)
                                remaining -= 1
                                yield from records
                    except (EOFError, OSError):
                        dead = True
                    if not (dead or h is w.proc.sentinel or not w.proc.is_alive()):
                        continue
                    if not w.ready:  # died while starting
                        start_failures += 1
                        if start_failures >= MAX_START_FAILURES:
                            raise LidaError(
                                f"lida batch: {start_failures} worker processes in a row died while starting"
                                f" (exit code {w.proc.exitcode}); see the log above"
                            )
                    held = len(w.held)
                    new, failed, next_cid = self._bury(w, next_cid)
                    todo.extendleft(reversed(new))
                    remaining += len(new) + len(failed) - held
                    for chunk in failed:
                        remaining -= 1
                        yield from self._died_records(chunk)
                    if remaining and len(self.pool) < min(self.workers, remaining):
                        self._spawn()
            graceful = True
        finally:
            self._stop_all(graceful)

    def _assign(self, todo: deque[_Chunk]) -> None:
        for w in self.pool:
            if not w.ready:
                continue
            while todo and len(w.held) < DEPTH:
                if any(c.solo for c in w.held.values()):
                    break  # a retried asset runs alone, so a crash is blamed on it only
                if todo[0].solo and w.held:
                    break
                chunk = todo.popleft()
                try:
                    w.conn.send((chunk.cid, chunk.paths))
                except (OSError, EOFError):  # it just died: the sentinel will tell
                    todo.appendleft(chunk)
                    break
                w.held[chunk.cid] = chunk

    def _bury(self, w: _Worker, next_cid: int) -> tuple[list[_Chunk], list[_Chunk], int]:
        """A dead worker: its chunks to hand out again (split into single assets) and the ones that
        have failed too often; returns ``(requeue, failed, next_cid)``."""
        w.proc.join(5)
        self.pool.remove(w)
        w.conn.close()
        self.deaths += 1
        code = w.proc.exitcode
        log.warning(
            "a worker process (pid %s) died (exit code %s) holding %d asset(s); they are retried one at a time",
            w.proc.pid,
            code,
            sum(len(c.paths) for c in w.held.values()),
        )
        requeue, failed = [], []
        for chunk in w.held.values():
            if chunk.solo:
                chunk.attempts += 1
                (failed if chunk.attempts >= self.max_attempts else requeue).append(chunk)
                continue
            for p in chunk.paths:
                requeue.append(_Chunk(next_cid, [p], attempts=1, solo=True))
                next_cid += 1
        return requeue, failed, next_cid

    def _died_records(self, chunk: _Chunk) -> Iterator[dict[str, Any]]:
        for p in chunk.paths:
            yield died_record(p, "worker process", chunk.attempts)
