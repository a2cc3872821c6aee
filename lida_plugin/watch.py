"""``lida watch``: attribute every image that lands in a drop folder, exactly once, unattended.

Design (``docs/watch.md``):

* **Observer / handler split.** A watchdog observer thread feeds :class:`_Handler`, which only
  tells the :class:`_Tracker` that a path changed, was closed after writing (Linux), arrived by
  an atomic rename, or went away. Nothing is read in the observer thread.
* **Complete files only.** The scheduler thread hands a path to the workers once its size and
  mtime have stayed the same for ``settle`` seconds, or ``close_settle`` seconds after a
  close-after-write, or at once after a rename into the folder. Temporary and partial names
  (dotfiles, ``~*``, ``*.part``, ``*.tmp``, ``*.crdownload``, ...) and non-image suffixes are
  ignored.
* **Nothing missed.** An initial scan, then events, plus a rescan every ``rescan`` seconds;
  scans skip files the journal knows by path, size and mtime, and hash the others, so a
  missed event costs one rescan interval, never an asset.
* **Exactly once.** The :class:`~lida_plugin.journal.Journal` is keyed by path and content
  hash. Reports are written atomically (temp file + rename) before the journal commit, and a
  report that already holds this path and hash is adopted on restart instead of being redone:
  a SIGKILL anywhere leaves neither a torn nor a duplicate report.
* **Duplicates.** Bytes already analysed under another name are not analysed again: the new
  name gets its own report, a copy of the first result with its own ``path`` and a
  ``duplicate_of`` field naming the first asset.
* **Bad files** get an error report (``status: "error"``) and, with ``--quarantine``, a copy
  (moved instead with ``--move-processed``) plus ``<name>.error.json`` beside it. The run goes on.
* **One model session.** Workers decode and crop in parallel; one encoder thread embeds what
  is ready in batches; one writer thread writes reports, journals and calls the
  ``lida_asset_done`` hook.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, LidaError
from .journal import Completion, Journal

log = logging.getLogger("lida.watch")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif", ".heic", ".heif", ".jxl"}
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", ".lock", ".filepart")
TMP_PREFIX = ".lida-tmp-"
MANIFEST_MODES = ("none", "sidecar", "embed")
WRITE_GROUP = 64  # assets completed per journal transaction at most
BATCH_WAIT = 0.02  # seconds the encoder waits for a fuller batch while files are queued


def is_candidate(name: str) -> bool:
    """Whether a file name is one the watcher analyses (not hidden, not temporary, an image suffix)."""
    if name.startswith((".", "~")) or name.lower().endswith(TEMP_SUFFIXES):
        return False
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


# -- structured logging ---------------------------------------------------------------------
def _event(level: int, event: str, **fields: Any) -> None:
    if log.isEnabledFor(level):
        text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        log.log(level, f"event={event} {text}".rstrip(), extra={"event": event, "fields": fields})


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    s = str(v)
    return json.dumps(s) if (not s or any(c in s for c in ' "=') or not s.isprintable()) else s  # no forged lines


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ``ts``, ``level``, ``event`` and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower()}
        out["event"] = getattr(record, "event", None) or "message"
        out.update(getattr(record, "fields", None) or {"message": record.getMessage()})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# -- configuration --------------------------------------------------------------------------
@dataclass
class WatchConfig:
    in_dir: Path
    out_dir: Path | None = None
    quarantine: Path | None = None
    move_processed: Path | None = None
    manifest: str = "none"
    workers: int = 2
    batch: int = 8
    settle: float = 1.0
    close_settle: float = 0.1
    rescan: float = 60.0
    stats_interval: float = 60.0
    recursive: bool = False
    polling: bool = False
    journal: Path | None = None
    tick: float = 0.05

    def __post_init__(self) -> None:
        self.in_dir = Path(self.in_dir).resolve()
        for name in ("out_dir", "quarantine", "move_processed", "journal"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, Path(v).resolve())
        if self.journal is None:
            self.journal = (self.out_dir or self.in_dir) / ".lida-watch.sqlite"
        if self.manifest not in MANIFEST_MODES:
            raise ValueError(f"manifest must be one of {MANIFEST_MODES}")
        self.workers = max(1, int(self.workers))
        self.batch = max(1, int(self.batch))

    def excluded_dirs(self) -> list[Path]:
        """Output folders that must not be watched even when they sit inside the input folder."""
        return [p for p in (self.out_dir, self.quarantine, self.move_processed) if p is not None]


# -- events -> tracker ----------------------------------------------------------------------
@dataclass
class _Pending:
    stat: tuple[int, int, int] | None
    changed: float  # monotonic time of the last change seen
    quiet: float  # seconds without change needed
    closed_ns: int | None = None  # wall time of a close-after-write or rename-in event


class _Tracker:
    """Paths seen but not yet handed to the workers, with what is known of their completeness."""

    def __init__(self, settle: float, close_settle: float) -> None:
        self.settle, self.close_settle = settle, close_settle
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: str) -> bool:
        return path in self._pending

    def touch(self, path: str) -> None:
        """Created or modified: wait for ``settle`` seconds of quiet."""
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                self._pending[path] = _Pending(None, time.monotonic(), self.settle)
            else:
                p.changed, p.quiet, p.closed_ns = time.monotonic(), self.settle, None

    def complete(self, path: str, quiet: float | None = None) -> None:
        """Closed after writing, or renamed into the folder: a short confirmation is enough."""
        with self._lock:
            quiet = self.close_settle if quiet is None else quiet
            self._pending[path] = _Pending(None, time.monotonic(), quiet, closed_ns=time.time_ns())

    def scanned(self, path: str, st: os.stat_result) -> None:
        """Found by a scan: an mtime older than ``settle`` counts as quiet time already spent."""
        with self._lock:
            if path not in self._pending:
                age = max(0.0, time.time() - st.st_mtime)
                self._pending[path] = _Pending(_key(st), time.monotonic() - min(age, self.settle), self.settle)

    def forget(self, path: str) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def due(self, now: float) -> list[tuple[str, _Pending]]:
        with self._lock:
            return [(k, p) for k, p in self._pending.items() if now - p.changed >= p.quiet]

    def confirm(self, path: str, st: os.stat_result, now: float) -> bool:
        """True (and forgotten) if ``st`` is what was seen a quiet period ago; else restart the wait."""
        key = _key(st)
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                return False
            # Unchanged since the last look; or, after a close/rename event, not modified since that event.
            if p.stat == key or (p.stat is None and p.closed_ns is not None and st.st_mtime_ns <= p.closed_ns):
                del self._pending[path]
                return True
            if p.stat is not None:  # it changed since the last look: a writer is still at work
                p.quiet = max(p.quiet, self.settle)
            p.stat, p.changed = key, now
            return False


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


def _make_handler(watcher: Watcher):
    from watchdog.events import FileSystemEventHandler

    class _Handler(FileSystemEventHandler):
        """Translates watchdog events into tracker updates (runs in the observer thread: no I/O)."""

        def on_created(self, event) -> None:
            if not event.is_directory:
                watcher._event_path(event.src_path, "touch")

        def on_modified(self, event) -> None:
            if not event.is_directory:
                watcher._event_path(event.src_path, "touch")

        def on_closed(self, event) -> None:  # Linux (inotify) only: the writer closed the file
            watcher._event_path(event.src_path, "complete")

        def on_moved(self, event) -> None:
            if event.is_directory:  # a folder renamed into the tree: let a scan pick up its files
                watcher.request_rescan()
                return
            watcher._event_path(event.src_path, "forget")
            watcher._event_path(event.dest_path, "renamed")

        def on_deleted(self, event) -> None:
            if not event.is_directory:
                watcher._event_path(event.src_path, "forget")

    return _Handler()


# -- work items -----------------------------------------------------------------------------
@dataclass
class _Item:
    path: str
    rel: str
    stat: tuple[int, int, int]
    ready_at: float
    sha256: str = ""
    prepared: tuple[Any, np.ndarray] | None = None
    record: dict[str, Any] | None = None
    adopted: bool = False
    duplicate_of: str | None = None
    waiters: list[_Item] = field(default_factory=list)
    sealed: bool = False  # in the writer: duplicate_of no longer changes


class _Stats:
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
class Watcher:
    """A drop-folder service. ``start()``, then ``stop()`` (or ``run(stop_event)`` for both).

    ``attributor`` is shared by every worker (one model session). ``pm`` is the plugin manager
    whose ``lida_asset_done`` (and, through the manifest writer, ``lida_manifest_assertions``)
    hooks are called; ``None`` uses :func:`lida_plugin.manager.get_plugin_manager`.
    """

    def __init__(self, config: WatchConfig, attributor, pm=None, manifest_writer=None) -> None:
        if pm is None:
            from .manager import get_plugin_manager

            pm = get_plugin_manager()
        self.cfg = config
        self.attributor = attributor
        self.pm = pm
        self.manifest_writer = manifest_writer
        self.tracker = _Tracker(config.settle, config.close_settle)
        self.stats = _Stats()
        self.journal: Journal | None = None
        self._stop = threading.Event()
        self._rescan_now = threading.Event()
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()
        self._claims: dict[str, _Item] = {}  # sha256 -> the item analysing those bytes now
        self._claim_lock = threading.Lock()
        self._work_q: queue.Queue[_Item | None] = queue.Queue()
        self._encode_q: queue.Queue[_Item | None] = queue.Queue(maxsize=4 * config.batch)
        self._write_q: queue.Queue[_Item | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._observer = None
        self._stdout_lock = threading.Lock()
        self._excluded = [str(p) + os.sep for p in config.excluded_dirs()]
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        from watchdog.events import (
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
        )

        cfg = self.cfg
        if not cfg.in_dir.is_dir():
            raise LidaError(f"watch folder {cfg.in_dir} does not exist or is not a folder")
        for d in cfg.excluded_dirs():
            d.mkdir(parents=True, exist_ok=True)
        cfg.journal.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = _exclusive_lock(Path(str(cfg.journal) + ".lock"))
        try:
            self.journal = Journal(cfg.journal)
        except LidaError:
            self._lock_file.close()
            raise
        self._clean_temp_files()
        self._observer = _make_observer(cfg.polling)
        events = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirMovedEvent]
        if type(self._observer).__name__ == "InotifyObserver":  # close events say when a write ends: one event
            events.remove(FileModifiedEvent)  # per file instead of one per written chunk (the settle stat still runs)
        try:
            self._observer.schedule(_make_handler(self), str(cfg.in_dir), recursive=cfg.recursive, event_filter=events)
            self._observer.start()  # before the scan, so nothing written during the scan is missed
            self._redeliver_notifications()
        except Exception:
            if self._observer.is_alive():
                self._observer.stop()
                self._observer.join()
            self.journal.close()
            self._lock_file.close()
            raise
        self._sync_pool = ThreadPoolExecutor(8, thread_name_prefix="lida-watch-fsync")
        self._threads = [threading.Thread(target=self._schedule_loop, name="lida-watch-scheduler", daemon=True)]
        self._threads += [
            threading.Thread(target=self._worker_loop, name=f"lida-watch-worker-{i}", daemon=True)
            for i in range(cfg.workers)
        ]
        self._threads.append(threading.Thread(target=self._encode_loop, name="lida-watch-encoder", daemon=True))
        self._threads.append(threading.Thread(target=self._write_loop, name="lida-watch-writer", daemon=True))
        for t in self._threads:
            t.start()
        self._started = True
        _event(
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
        self._threads[0].join()  # scheduler: nothing new is queued after this
        dropped = 0
        while True:  # queued but not started: left for the next start (the journal does not have them)
            try:
                item = self._work_q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                dropped += 1
                self._release(item.path)
        workers = self._threads[1:-2]
        for _ in workers:
            self._work_q.put(None)
        for t in workers:
            t.join()
        self._encode_q.put(None)
        self._threads[-2].join()
        self._write_q.put(None)
        self._threads[-1].join()
        self._threads = []
        self._sync_pool.shutdown()
        c = self.stats.counts
        _event(logging.INFO, "stopped", processed=sum(c.values()), left_for_next_start=dropped + len(self.tracker), **c)
        self.journal.close()
        self._lock_file.close()

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set; raises :class:`LidaError` if the scheduler died (after stopping cleanly)."""
        self.start()
        try:
            while not stop.wait(0.5) and not self._stop.is_set():
                pass
        finally:
            crashed = self._stop.is_set() and not stop.is_set()
            self.stop()
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

    # -- event side -----------------------------------------------------------------------------
    def _event_path(self, raw: str | bytes, what: str) -> None:
        path = os.fsdecode(raw)
        if what == "forget":
            self.tracker.forget(path)
            return
        if not self._watched(path):
            return
        if what == "touch":
            self.tracker.touch(path)
        elif what == "complete":
            self.tracker.complete(path)
        elif what == "renamed":
            self.tracker.complete(path, quiet=0.0)

    def _watched(self, path: str) -> bool:
        if not is_candidate(os.path.basename(path)) or any(path.startswith(d) for d in self._excluded):
            return False
        rel = os.path.relpath(path, self.cfg.in_dir)
        if rel.startswith(".."):
            return False
        parts = rel.split(os.sep)
        return (self.cfg.recursive or len(parts) == 1) and not any(p.startswith(".") for p in parts[:-1])

    def _scan(self) -> int:
        """Walk the folder; queue what the journal does not know by (path, size, mtime)."""
        found = 0
        stack = [str(self.cfg.in_dir)]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError as exc:
                _event(logging.WARNING, "scan_error", dir=d, error=exc.strerror or exc)
                continue
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if self.cfg.recursive and not e.name.startswith(".") and self._watched_dir(e.path):
                            stack.append(e.path)
                        continue
                    if not e.is_file() or not self._watched(e.path):
                        continue
                    st = e.stat()
                except OSError:
                    continue
                if e.path in self.tracker or self._is_inflight(e.path):
                    continue
                entry = self.journal.seen_stat(e.path, st.st_size, st.st_mtime_ns)
                if entry is not None:
                    if self.cfg.move_processed and entry.state != "error":  # journaled, but the move was cut off
                        self._move_processed(e.path, os.path.relpath(e.path, self.cfg.in_dir))
                    continue
                self.tracker.scanned(e.path, st)
                found += 1
        return found

    def _watched_dir(self, path: str) -> bool:
        return not any((path + os.sep).startswith(d) for d in self._excluded)

    def _schedule_loop(self) -> None:
        try:
            n = self._scan()
        except Exception:  # the journal or the folder is unusable from the start: stop rather than sit idle
            log.exception("event=scheduler_crashed")
            self._stop.set()
            return
        _event(logging.INFO, "scan", new=n, initial=True)
        next_rescan = time.monotonic() + self.cfg.rescan
        next_stats = time.monotonic() + self.cfg.stats_interval
        while not self._stop.wait(self.cfg.tick):
            try:
                now = time.monotonic()
                self._dispatch_due(now)
                if now >= next_rescan or self._rescan_now.is_set():
                    self._rescan_now.clear()
                    next_rescan = now + self.cfg.rescan
                    n = self._scan()
                    if n:
                        _event(logging.INFO, "scan", new=n, initial=False)
                if now >= next_stats:
                    next_stats = now + self.cfg.stats_interval
                    self._log_stats()
            except Exception:  # e.g. a transient journal error: log, breathe, go on (the rescan catches up)
                log.exception("event=scheduler_error")
                self._stop.wait(1.0)

    def _dispatch_due(self, now: float) -> None:
        """Hand the paths whose size and mtime stayed the same for their quiet period to the workers."""
        for path, _ in self.tracker.due(now):
            if self._is_inflight(path):
                continue  # changed while being analysed: looked at again once it is done
            try:
                st = os.stat(path)
            except OSError:
                self.tracker.forget(path)
                continue
            if self.tracker.confirm(path, st, now):
                self._enqueue(path, st)

    def _log_stats(self) -> None:
        c = self.stats.counts
        _event(
            logging.INFO,
            "throughput",
            rate=self.stats.rate(self.cfg.stats_interval),
            done=c["done"],
            duplicates=c["duplicate"],
            errors=c["error"],
            adopted=c["adopted"],
            pending=len(self.tracker),
            queued=self._work_q.qsize(),
            inflight=len(self._inflight),
        )

    def _enqueue(self, path: str, st: os.stat_result) -> None:
        entry = self.journal.seen_stat(path, st.st_size, st.st_mtime_ns)
        if entry is not None:
            return  # an event for a file already done (e.g. touched without a change)
        with self._inflight_lock:
            if path in self._inflight:
                return
            self._inflight.add(path)
        self._work_q.put(_Item(path, os.path.relpath(path, self.cfg.in_dir), _key(st), time.monotonic()))

    def _is_inflight(self, path: str) -> bool:
        with self._inflight_lock:
            return path in self._inflight

    def _release(self, path: str) -> None:
        with self._inflight_lock:
            self._inflight.discard(path)

    # -- workers: read, hash, dedupe, decode ---------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            item = self._work_q.get()
            if item is None:
                return
            try:
                self._prepare(item)
            except Exception as exc:  # a bug must cost one file, not the service
                log.exception("event=worker_error path=%s", item.path)
                self._fail(item, f"internal error: {exc}")

    def _prepare(self, item: _Item) -> None:
        from .decode import decode_bytes, read_bytes

        try:
            data = read_bytes(item.path)
            st = os.stat(item.path)
        except InputError as exc:
            if exc.reason == "no such file":
                self._release(item.path)  # gone before we got to it: nothing to report
                return
            with contextlib.suppress(OSError):
                adopted = self._adoptable_report(item, os.stat(item.path))
                if adopted is not None and adopted.get("status") == "error":  # reported by a killed run
                    item.record, item.adopted = adopted, True
                    self._write_q.put(item)
                    return
            self._fail(item, exc.reason)
            return
        except FileNotFoundError:
            self._release(item.path)
            return
        if _key(st) != item.stat or len(data) != st.st_size:  # still being written after all
            self._repend(item)
            return
        try:  # decoding hashes the bytes too: one pass over them serves the journal, dedupe and the record
            decoded = decode_bytes(data, item.path, max_pixels=self.attributor.max_pixels)
            failure = None
            item.sha256 = decoded.sha256
        except InputError as exc:
            decoded, failure = None, exc.reason
        except MemoryError:
            decoded, failure = None, "out of memory while decoding"
        if decoded is None and 0 <= time.time() - st.st_mtime < self.cfg.settle:
            # Written moments ago (a close or rename event let it through) and unreadable: likely a writer that
            # closes and reopens between chunks. Call it bad only after a full settle time without change.
            self._repend(item)
            return
        if decoded is None:
            item.sha256 = hashlib.sha256(data).hexdigest()
        with self._claim_lock:
            if self.journal.get(item.path, item.sha256) is not None:  # known bytes, new mtime
                self.journal.update_stat(item.path, item.sha256, st.st_size, st.st_mtime_ns)
                self._release(item.path)
                return
            adopted = self._adoptable_report(item, st)
            if adopted is not None:  # its report was written by a run killed before journaling it
                item.record, item.adopted = adopted, True
                item.duplicate_of = adopted.get("duplicate_of")
                if adopted.get("status") == "ok" and not item.duplicate_of:
                    self._adopt_original(item)
                self._write_q.put(item)
                return
            first = self.journal.first_done(item.sha256)
            if first is not None and first.path != item.path:
                item.duplicate_of = first.path
                item.record = _read_report(first.report, first.sha256)
                if item.record is not None:
                    self._write_q.put(item)
                    return
            claim = self._claims.get(item.sha256)
            if claim is not None:  # the same bytes are being analysed under another name right now
                item.duplicate_of = claim.path
                claim.waiters.append(item)
                return
            self._claims[item.sha256] = item
        if failure is not None:
            self._fail(item, failure)
            return
        try:
            crops = self.attributor.encoder.crops_for(decoded)
        except InputError as exc:
            self._fail(item, exc.reason)
            return
        # Keep the shape (width/height) but not the pixels: the crops are all the encoder needs.
        decoded.pixels = np.broadcast_to(np.zeros((), np.uint8), decoded.pixels.shape)
        item.prepared = (decoded, crops)
        self._encode_q.put(item)

    def _adopt_original(self, item: _Item) -> None:
        """(Claim lock held.) An adopted report says its asset is the first with these bytes: make that so,
        or, when another name already is, turn the adopted one into a duplicate (its report gains
        ``duplicate_of``; the result is reused, not recomputed)."""
        first = self.journal.first_done(item.sha256)
        claim = self._claims.get(item.sha256)
        if first is not None and first.path != item.path:
            other = first.path
        elif claim is not None and claim.sealed:
            other = claim.path
        else:
            if claim is not None:  # being analysed under another name, not yet written: that one becomes the duplicate
                claim.duplicate_of = item.path
                item.waiters += claim.waiters
                claim.waiters = []
            self._claims[item.sha256] = item
            return
        item.duplicate_of, item.adopted = other, False

    def _adoptable_report(self, item: _Item, st: os.stat_result) -> dict[str, Any] | None:
        """A report for these very bytes left by a run killed between writing it and journaling it.

        An ``ok`` report must name this path and hash; an error report (no hash) must name this path
        and be newer than the file's last change.
        """
        if self.cfg.out_dir is None:
            return None
        report = self._report_path(item.rel)
        try:
            rec = json.loads(report.read_text())
            newer = report.stat().st_mtime_ns >= st.st_mtime_ns
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("path") != item.path:
            return None
        if rec.get("status") == "ok":
            return rec if (rec.get("image") or {}).get("sha256") == item.sha256 else None
        return rec if rec.get("status") == "error" and newer else None

    def _repend(self, item: _Item) -> None:
        with self._claim_lock:
            waiters = []
            if item.sha256 and self._claims.get(item.sha256) is item:
                del self._claims[item.sha256]
                waiters = item.waiters
        for it in [item, *waiters]:
            self._release(it.path)
            self.tracker.touch(it.path)

    def _fail(self, item: _Item, reason: str) -> None:
        from .attribute import error_result

        item.record = error_result(item.path, reason, self.attributor.model_id, self.attributor.store_id).to_dict()
        self._write_q.put(item)

    # -- encoder: one session, batches of what is ready ----------------------------------------------
    def _encode_loop(self) -> None:
        from .attribute import error_result

        done = False
        while not done:
            item = self._encode_q.get()
            if item is None:
                return
            # Under load (files still queued for decoding) wait a little for a fuller batch: fewer, larger
            # encoder runs; at idle take what is there, so a lone file is not delayed.
            end = time.monotonic() + BATCH_WAIT
            wait = lambda end=end: end - time.monotonic() if self._work_q.qsize() else 0.0  # noqa: E731
            batch, done = _take(self._encode_q, item, self.cfg.batch, wait)
            try:
                results = [r.to_dict() for r in self.attributor.attribute_decoded([b.prepared for b in batch])]
            except Exception as exc:  # an encoder failure must not lose the files
                log.exception("event=encoder_error files=%d", len(batch))
                results = [
                    error_result(
                        b.path, f"encoder failed: {exc}", self.attributor.model_id, self.attributor.store_id
                    ).to_dict()
                    for b in batch
                ]
            for b, rec in zip(batch, results, strict=True):
                b.record, b.prepared = rec, None
                self._write_q.put(b)

    # -- writer: reports, quarantine, journal, hooks ---------------------------------------------------
    def _write_loop(self) -> None:
        """Completes what is ready in groups: reports fsync'd in parallel, one journal transaction per group."""
        last = False
        while not last:
            item = self._write_q.get()
            if item is None:
                return
            group, last = _take(self._write_q, item, WRITE_GROUP)
            try:
                self._complete(group)
            except Exception:  # e.g. disk full: nothing journaled, so the next rescan retries these files
                log.exception("event=writer_error files=%d", len(group))
                for it in group + self._release_claims(group):
                    self._release(it.path)

    def _complete(self, group: list[_Item]) -> None:
        with self._claim_lock:  # from here on, whether an item is a duplicate is settled
            for it in group:
                it.sealed = True
        finished: list[tuple[_Item, dict[str, Any], dict[str, str], str]] = []
        for it in group:
            record = dict(it.record)
            record["path"] = it.path
            if it.duplicate_of:
                record["duplicate_of"] = it.duplicate_of
            ok = record.get("status") == "ok"
            state = "error" if not ok else ("duplicate" if it.duplicate_of else "done")
            outputs: dict[str, str] = {}
            if ok and self.manifest_writer is not None and not it.adopted:
                manifest = self._write_manifest(record)
                if manifest:
                    outputs["manifest"] = manifest
            finished.append((it, record, outputs, state))
        if self.cfg.out_dir is not None:
            writes = []
            for it, record, outputs, _ in finished:
                outputs["report"] = str(self._report_path(it.rel))
                if not it.adopted:
                    writes.append((self._report_path(it.rel), (json.dumps(record, indent=2) + "\n").encode()))
            list(self._sync_pool.map(lambda w: _atomic_write(*w), writes))  # parallel fsyncs share journal commits
        else:
            with self._stdout_lock:
                sys.stdout.write("".join(json.dumps(r) + "\n" for _, r, _, _ in finished))
                sys.stdout.flush()
        completions = []
        for it, record, outputs, state in finished:
            if state == "error" and self.cfg.quarantine is not None:
                q = self._quarantine(it, record)
                if q:
                    outputs["quarantine"] = q
            size, mtime_ns, _ = it.stat
            completions.append(
                Completion(it.path, it.sha256 or "unreadable", state, size, mtime_ns, report=outputs.get("report"),
                           duplicate_of=it.duplicate_of, error=record.get("error"))
            )  # fmt: skip
        stale = self.journal.record(completions)  # error rows of earlier bytes of these paths, now replaced
        self._unquarantine(stale)
        # Only now, with the bytes journaled, may another name with them be told it is a duplicate.
        waiters = self._release_claims(group)
        for w in waiters:  # same bytes under another name, analysed meanwhile: reuse the result
            w.record = next(it.record for it in group if it.sha256 == w.sha256)
        from .manager import notify_asset_done

        for it, record, outputs, state in finished:
            if self.cfg.move_processed and state != "error":
                moved = self._move_processed(it.path, it.rel)
                if moved:
                    outputs["moved_to"] = moved
            notify_asset_done(self.pm, path=it.path, record=record, outputs=outputs)
            self._release(it.path)
            self.stats.add("adopted" if it.adopted else state)
            _event(
                logging.INFO, "asset", path=it.rel, state=state, verdict=record.get("verdict"),
                generator=record.get("generator"), error=record.get("error"), duplicate_of=it.duplicate_of,
                latency_s=round(time.monotonic() - it.ready_at, 3),
            )  # fmt: skip
        self.journal.mark_notified((c.path, c.sha256) for c in completions)
        if waiters:
            self._complete(waiters)

    def _release_claims(self, group: list[_Item]) -> list[_Item]:
        """Forget the group's claims on their bytes; the items that waited on them."""
        waiters = []
        with self._claim_lock:
            for it in group:
                if it.sha256 and self._claims.get(it.sha256) is it:
                    del self._claims[it.sha256]
                    waiters += it.waiters
        return waiters

    def _write_manifest(self, record: dict[str, Any]) -> str | None:
        """Sign the finding into a C2PA manifest (``record["manifest"]`` says how it went); its path if written."""
        writer = self.manifest_writer
        # a service writes an asset's manifest again when its bytes change, and only this thread
        # calls apply(), so forgetting earlier claims is safe
        writer.forget_claims()
        try:
            writer.apply(record)
        except Exception as exc:  # the report is still written; the manifest failure is recorded in it
            log.exception("event=manifest_error path=%s", record.get("path"))
            record["manifest"] = {"status": "error", "error": f"internal error: {exc}", "original_untouched": True}
        m = record.get("manifest") or {}
        if m.get("status") != "ok":
            _event(logging.WARNING, "manifest_failed", path=record.get("path"), error=m.get("error"))
            return None
        return m.get("path")

    def _report_path(self, rel: str) -> Path:
        return self.cfg.out_dir / (rel + ".json")

    def _quarantine(self, it: _Item, record: dict[str, Any]) -> str | None:
        dest = self.cfg.quarantine / it.rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if self.cfg.move_processed:
                shutil.move(it.path, dest)  # a rename when on the same file system
            else:
                tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}")
                shutil.copy2(it.path, tmp)
                os.replace(tmp, dest)
        except OSError as exc:
            _event(logging.WARNING, "quarantine_copy_failed", path=it.path, error=exc.strerror or exc)
        err = {"path": it.path, "quarantined_as": str(dest), "error": record.get("error"), "sha256": it.sha256 or None,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "record": record}  # fmt: skip
        _atomic_write(dest.with_name(dest.name + ".error.json"), (json.dumps(err, indent=2) + "\n").encode())
        return str(dest)

    def _unquarantine(self, stale: list[tuple[str, str]]) -> None:
        """Remove the quarantine entries of earlier, unreadable bytes of paths that now hold other bytes (a
        partial file of a slow writer), unless the new bytes went to the quarantine again (then replaced)."""
        for path, sha in stale if self.cfg.quarantine is not None and not self.cfg.move_processed else ():
            dest = self.cfg.quarantine / os.path.relpath(path, self.cfg.in_dir)
            err = dest.with_name(dest.name + ".error.json")
            with contextlib.suppress(OSError, ValueError):
                if json.loads(err.read_text()).get("sha256") == (None if sha == "unreadable" else sha):
                    dest.unlink(missing_ok=True)
                    err.unlink()

    def _move_processed(self, path: str, rel: str) -> str | None:
        dest = self.cfg.move_processed / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, dest)
        except OSError as exc:
            _event(logging.WARNING, "move_failed", path=path, error=exc.strerror or exc)
            return None
        return str(dest)

    def _redeliver_notifications(self) -> None:
        """``lida_asset_done`` for assets journaled by a run that died before telling the plugins."""
        from .manager import notify_asset_done

        entries = self.journal.unnotified()
        for e in entries:
            record = _read_report(e.report, None) if e.report else None
            if record is None:
                record = {"path": e.path, "status": "error" if e.state == "error" else "ok", "error": e.error}
            outputs = {"report": e.report} if e.report else {}
            notify_asset_done(self.pm, path=e.path, record=record, outputs=outputs)
        if entries:
            self.journal.mark_notified((e.path, e.sha256) for e in entries)
            _event(logging.INFO, "redelivered", assets=len(entries))

    def _clean_temp_files(self) -> None:
        # report temps (.lida-tmp-<name>...) and manifest temps (.<name>.lida-tmp-<pid>-<hex>) a kill left behind
        from .tempfiles import sweep_stale_temps

        sweep_stale_temps(self.cfg.excluded_dirs(), recursive=True, owned=True)


def _take(q: queue.Queue, first: _Item, limit: int, wait=lambda: 0.0) -> tuple[list[_Item], bool]:
    """``first`` and whatever else ``q`` holds, up to ``limit`` items (waiting at most ``wait()`` seconds for
    each); and whether the end-of-work sentinel (``None``) was taken."""
    items = [first]
    while len(items) < limit:
        w = wait()
        try:
            nxt = q.get(timeout=w) if w > 0 else q.get_nowait()
        except queue.Empty:
            break
        if nxt is None:
            return items, True
        items.append(nxt)
    return items, False


def _exclusive_lock(path: Path):
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


def _make_observer(polling: bool):
    """PollingObserver for shares; inotify with full move events on Linux (a rename into the folder from
    outside is then a FileMovedEvent, delivered at once, not a FileCreatedEvent); else the platform's."""
    if polling:
        from watchdog.observers.polling import PollingObserver

        return PollingObserver()
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver(generate_full_events=True)
    from watchdog.observers import Observer

    return Observer()


def _read_report(path: str | None, sha256: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if sha256 is not None and ((rec.get("image") or {}).get("sha256") != sha256 or rec.get("status") != "ok"):
        return None
    rec.pop("duplicate_of", None)
    return rec


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- command line ---------------------------------------------------------------------------
def manifest_writer_for(args: argparse.Namespace, encoder):
    """The C2PA :class:`~lida_plugin.manifest.ManifestWriter` for ``--manifest sidecar|embed``, or None."""
    if args.manifest == "none":
        return None
    if args.out is None:
        raise LidaError(f"--manifest {args.manifest} needs --out OUT_DIR (manifests are written beside the reports)")
    try:
        from .keys import load_signing_config
        from .manifest import ManifestWriter
    except ImportError as exc:
        raise LidaError(f"--manifest {args.manifest}: this installation has no C2PA manifest writer ({exc})") from None
    return ManifestWriter(
        load_signing_config(args.keys),
        mode=args.manifest,
        out_dir=args.out,
        policy=args.source_type_policy,
        model_sha256=getattr(encoder, "sha256", None),
    )


def add_commands(sub) -> None:
    from . import cli
    from .manifest import add_signing_args

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
    p.add_argument("-k", "--top-k", type=int, default=5, help="registered generators to list per image (default 5)")
    p.add_argument("--force", action="store_true", help="give a verdict even when the fingerprint is unreliable")
    p.set_defaults(func=cmd_watch)
    cli._add_model_args(p)
    cli._add_store_args(p)


def cmd_watch(args: argparse.Namespace) -> int:
    from . import cli
    from .attribute import Attributor
    from .store import open_stack

    _setup_logging(args.log_json)
    if args.workers < 1 or args.settle < 0 or args.close_settle < 0 or args.rescan <= 0 or args.stats_interval <= 0:
        print("lida watch: error: --workers must be >= 1 and the intervals positive", file=sys.stderr)
        return cli.EXIT_USAGE
    if args.manifest != "none" and not args.out:
        print(f"lida watch: error: --manifest {args.manifest} needs --out OUT_DIR (manifests go beside the reports)",
              file=sys.stderr)  # fmt: skip
        return cli.EXIT_USAGE
    cfg = WatchConfig(
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
    encoder = cli._open_encoder(args)
    writer = manifest_writer_for(args, encoder)  # keys are checked before anything is watched
    stack = open_stack(encoder, args.store, use_default=not args.no_default_store)
    attributor = Attributor(encoder, stack, top_k=args.top_k, force=args.force)
    stop = threading.Event()
    signals = {"n": 0}

    def on_signal(signum, frame) -> None:
        signals["n"] += 1
        if signals["n"] > 1:
            print("lida watch: second signal, exiting without finishing", file=sys.stderr)
            os._exit(cli.EXIT_INTERRUPTED)
        _event(logging.INFO, "stopping", signal=signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        Watcher(cfg, attributor, manifest_writer=writer).run(stop)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        stack.close()
        if writer is not None:
            writer.close()
    return cli.EXIT_OK


def _setup_logging(as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s lida.watch %(message)s"
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(fmt))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
