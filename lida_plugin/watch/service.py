"""The :class:`Watcher` service: its state, its threads (by role), start, stop."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LidaError
from ..journal import Journal
from .analysis import AnalysisStages
from .completion import WriterStage
from .config import WatchConfig
from .items import Item
from .logs import event
from .outputs import Outputs
from .scheduling import SchedulerStage
from .tracking import Tracker, make_handler, make_observer


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)
        self.window: deque[float] = deque()
        self.started = time.monotonic()

    def add(self, state: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.counts[state] += 1
            self.window.append(now)

    def rate(self, seconds: float) -> float:
        now = time.monotonic()
        with self.lock:
            while self.window and now - self.window[0] > seconds:
                self.window.popleft()
            span = min(seconds, max(1e-9, now - self.started))
            return len(self.window) / span


# -- the watcher ----------------------------------------------------------------------------
class Watcher(SchedulerStage, AnalysisStages, WriterStage, Outputs):
    """A drop-folder service. ``start()``, then ``stop()`` (or ``run(stop_event)`` for both).

    ``attributor`` is shared by every worker (one model session). ``pm`` is the plugin manager
    whose ``lida_asset_done`` (and, through the manifest writer, ``lida_manifest_assertions``)
    hooks are called (a host passes its own, as ``lida watch`` passes the command line's; there is
    no global fallback). ``manifest_writer`` should be built with the same ``pm``.

    Threads, by role (:attr:`threads`): ``scheduler`` (scans, tracker, queueing), ``workers``
    (read, hash, dedupe, :meth:`Attributor.prepare`), ``encoder`` (:meth:`Attributor.finish` on
    batches), ``writer`` (reports, quarantine, journal, hooks).
    """

    def __init__(self, config: WatchConfig, attributor, pm, manifest_writer=None) -> None:
        self.cfg = config
        self.attributor = attributor
        self.pm = pm
        self.manifest_writer = manifest_writer
        self.tracker = Tracker(config.settle, config.close_settle)
        self.stats = Stats()
        self.journal: Journal | None = None
        self._stop = threading.Event()
        self.output_closed = False  # stdout (the records, without --out) lost its reader: run() stops
        self._rescan_now = threading.Event()
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()
        self._claims: dict[str, Item] = {}  # sha256 -> the item analysing those bytes now
        self._moves: dict[str, str] = {}  # new name -> old name, for renames inside the folder (_event_moved)
        self._moves_lock = threading.Lock()
        self._claim_lock = threading.Lock()
        self._work_q: queue.Queue[Item | None] = queue.Queue()
        self._encode_q: queue.Queue[Item | None] = queue.Queue(maxsize=4 * config.batch)
        self._write_q: queue.Queue[Item | None] = queue.Queue()
        self.threads: dict[str, list[threading.Thread]] = {}
        self._observer = None
        self._observer_events: list = []
        self._in_dir_id: tuple[int, int] | None = None
        self._stdout_lock = threading.Lock()
        self._excluded = [str(p) + os.sep for p in config.excluded_dirs()]
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        if not cfg.in_dir.is_dir():
            raise LidaError(f"watch folder {cfg.in_dir} does not exist or is not a folder")
        for d in [*cfg.excluded_dirs(), cfg.journal.parent]:
            if d.exists() and not d.is_dir():
                raise LidaError(f"{d} exists and is not a folder (the watcher writes into it)")
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LidaError(f"cannot create the folder {d}: {exc.strerror or exc}") from None
        try:
            self._lock_file = exclusive_lock(Path(str(cfg.journal) + ".lock"))
        except PermissionError as exc:
            raise LidaError(f"cannot write the journal's lock {exc.filename}: {exc.strerror}") from None
        try:
            self.journal = Journal(cfg.journal)
        except LidaError:
            self._lock_file.close()
            raise
        self._clean_temp_files()
        self._start_observer()
        self._sync_pool = ThreadPoolExecutor(8, thread_name_prefix="lida-watch-fsync")

        def thread(target, name: str) -> threading.Thread:
            return threading.Thread(target=target, name=f"lida-watch-{name}", daemon=True)

        self.threads = {
            "scheduler": [thread(self._schedule_loop, "scheduler")],
            "workers": [thread(self._worker_loop, f"worker-{i}") for i in range(cfg.workers)],
            "encoder": [thread(self._encode_loop, "encoder")],
            "writer": [thread(self._write_loop, "writer")],
        }
        for group in self.threads.values():
            for t in group:
                t.start()
        self._started = True
        event(
            logging.INFO,
            "ready",
            in_dir=cfg.in_dir,
            out=cfg.out_dir,
            quarantine=cfg.quarantine,
            workers=cfg.workers,
            model=self.attributor.model_id,
            store=self.attributor.store_id,
            journal=cfg.journal,
            observer=type(self._observer).__name__,
        )

    def stop(self) -> None:
        """Stop watching, finish the files already being analysed, flush, close. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self._observer.stop()
        self._observer.join()
        self._join("scheduler")  # nothing new is queued after this
        dropped = 0
        while True:  # queued but not started: left for the next start (the journal does not have them)
            try:
                item = self._work_q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                dropped += 1
                self._release(item.path)
        for _ in self.threads["workers"]:
            self._work_q.put(None)
        self._join("workers")
        self._encode_q.put(None)
        self._join("encoder")
        self._write_q.put(None)
        self._join("writer")
        self.threads = {}
        self._sync_pool.shutdown()
        c = self.stats.counts
        event(logging.INFO, "stopped", processed=sum(c.values()), left_for_next_start=dropped + len(self.tracker), **c)
        self.journal.close()
        self._lock_file.close()

    def _start_observer(self) -> None:
        """Schedule and start the watchdog observer, then re-deliver notifications a killed run owed (all undone
        on failure: the journal and the lock are closed again)."""
        from watchdog.events import (
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
        )

        cfg = self.cfg
        self._observer = make_observer(cfg.polling)
        events = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirMovedEvent]
        if type(self._observer).__name__ == "InotifyObserver":  # close events say when a write ends: one event
            events.remove(FileModifiedEvent)  # per file instead of one per written chunk (the settle stat still runs)
        self._observer_events = events
        self._in_dir_id = _folder_id(cfg.in_dir)
        try:
            self._observer.schedule(make_handler(self), str(cfg.in_dir), recursive=cfg.recursive, event_filter=events)
            self._observer.start()  # before the scan, so nothing written during the scan is missed
            self._redeliver_notifications()
        except Exception:
            if self._observer.is_alive():
                self._observer.stop()
                self._observer.join()
            self.journal.close()
            self._lock_file.close()
            raise

    def _rewatch_if_replaced(self) -> bool:
        """When the watched folder was renamed away and made again (another inode), the observer still
        watches the old one and new files waited for the next rescan without a word: watch the new folder
        and rescan now. True when that happened."""
        now = _folder_id(self.cfg.in_dir)
        if now is None or now == self._in_dir_id:
            return False
        event(logging.WARNING, "watched_folder_replaced", dir=self.cfg.in_dir)
        self._in_dir_id = now
        self._observer.unschedule_all()
        self._observer.schedule(make_handler(self), str(self.cfg.in_dir), recursive=self.cfg.recursive,
                                event_filter=self._observer_events)  # fmt: skip
        self.request_rescan()
        return True

    def _join(self, role: str) -> None:
        for t in self.threads.get(role, []):
            t.join()

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set; raises :class:`LidaError` if the scheduler died (after stopping cleanly)."""
        self.start()
        try:
            while not stop.wait(0.5) and not self._stop.is_set():
                pass
        finally:
            crashed = self._stop.is_set() and not stop.is_set() and not self.output_closed
            self.stop()
        if self.output_closed:
            raise BrokenPipeError("the records' reader went away (stdout closed); nothing undelivered is journaled")
        if crashed:
            raise LidaError("the watcher's scheduler failed (see the log); restart it: nothing journaled is lost")

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request_rescan(self) -> None:
        self._rescan_now.set()

    def idle(self) -> bool:
        """Nothing pending, queued or being analysed (for tests and benchmarks)."""
        with self._inflight_lock:
            return not self._inflight and not len(self.tracker)


def _folder_id(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of a folder, or None when it is not there (a rescan logs that)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def exclusive_lock(path: Path):
    """Hold an exclusive lock on ``path`` for as long as the returned file is open (released by the OS on a
    crash): two watchers on one journal would analyse files twice."""
    f = open(path, "a+")  # noqa: SIM115
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise LidaError(f"another lida watch is already using the journal {path.with_suffix('')}") from None
    return f
