"""The event side: watchdog events become tracker updates; the tracker says when a file is complete.

The observer / handler split follows watchdog's: the observer thread only calls :class:`_Handler`,
which tells the :class:`Tracker` that a path changed, was closed after writing (Linux), arrived
by an atomic rename, or went away. Nothing is read in the observer thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Protocol


# -- events -> tracker ----------------------------------------------------------------------
@dataclass
class Pending:
    stat: tuple[int, int, int] | None
    changed: float  # monotonic time of the last change seen
    quiet: float  # seconds without change needed
    closed_ns: int | None = None  # wall time of a close-after-write or rename-in event


class Tracker:
    """Paths seen but not yet handed to the workers, with what is known of their completeness."""

    def __init__(self, settle: float, close_settle: float) -> None:
        self.settle, self.close_settle = settle, close_settle
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: str) -> bool:
        return path in self._pending

    def touch(self, path: str) -> None:
        """Created or modified: wait for ``settle`` seconds of quiet."""
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                self._pending[path] = Pending(None, time.monotonic(), self.settle)
            else:
                p.changed, p.quiet, p.closed_ns = time.monotonic(), self.settle, None

    def complete(self, path: str, quiet: float | None = None) -> None:
        """Closed after writing, or renamed into the folder: a short confirmation is enough."""
        with self._lock:
            quiet = self.close_settle if quiet is None else quiet
            self._pending[path] = Pending(None, time.monotonic(), quiet, closed_ns=time.time_ns())

    def scanned(self, path: str, st: os.stat_result) -> None:
        """Found by a scan: an mtime older than ``settle`` counts as quiet time already spent."""
        with self._lock:
            if path not in self._pending:
                age = max(0.0, time.time() - st.st_mtime)
                self._pending[path] = Pending(stat_key(st), time.monotonic() - min(age, self.settle), self.settle)

    def forget(self, path: str) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def due(self, now: float) -> list[tuple[str, Pending]]:
        with self._lock:
            return [(k, p) for k, p in self._pending.items() if now - p.changed >= p.quiet]

    def confirm(self, path: str, st: os.stat_result, now: float) -> bool:
        """True (and forgotten) if ``st`` is what was seen a quiet period ago; else restart the wait."""
        key = stat_key(st)
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


def stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


class EventSink(Protocol):
    """What the handler tells (the :class:`~lida_plugin.watch.service.Watcher`)."""

    def _event_path(self, raw: str | bytes, what: str) -> None: ...

    def _event_moved(self, src: str | bytes, dest: str | bytes) -> None: ...

    def request_rescan(self) -> None: ...


def make_handler(watcher: EventSink):
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
            watcher._event_moved(event.src_path, event.dest_path)

        def on_deleted(self, event) -> None:
            if not event.is_directory:
                watcher._event_path(event.src_path, "forget")

    return _Handler()


def make_observer(polling: bool):
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
