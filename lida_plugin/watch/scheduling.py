"""The scheduler stage: scans and tracker updates become queued work, once per complete file."""

from __future__ import annotations

import logging
import os
import time

from .config import is_candidate
from .items import Item
from .logs import event, log
from .tracking import stat_key


class SchedulerStage:
    """Mixin of :class:`~lida_plugin.watch.service.Watcher`: the scheduler thread and the event entry point."""

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

    def _event_moved(self, src_raw: str | bytes, dest_raw: str | bytes) -> None:
        """A rename: the old name is forgotten, the new one is complete at once; a rename inside the folder is
        remembered (:meth:`renamed_from`), so the new name takes over the old one's result and report."""
        src, dest = os.fsdecode(src_raw), os.fsdecode(dest_raw)
        if self._watched(src) and self._watched(dest):
            with self._moves_lock:
                self._moves[dest] = src
                while len(self._moves) > 10_000:  # never claimed (e.g. renamed again at once): oldest go
                    self._moves.pop(next(iter(self._moves)))
        self._event_path(src_raw, "forget")
        self._event_path(dest_raw, "renamed")

    def renamed_from(self, path: str) -> str | None:
        """The name ``path`` was renamed from inside the folder since the watcher started, following a chain of
        renames to the first name (a -> b -> c gives a for c); consumed."""
        with self._moves_lock:
            src = self._moves.pop(path, None)
            seen = {path}
            while src is not None and src in self._moves and src not in seen:
                seen.add(src)
                src = self._moves.pop(src)
        return src

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
                event(logging.WARNING, "scan_error", dir=d, error=exc.strerror or exc)
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
        event(logging.INFO, "scan", new=n, initial=True)
        next_rescan = time.monotonic() + self.cfg.rescan
        next_stats = time.monotonic() + self.cfg.stats_interval
        next_folder_check = time.monotonic() + 1.0
        while not self._stop.wait(self.cfg.tick):
            try:
                now = time.monotonic()
                if now >= next_folder_check:  # one stat a second
                    next_folder_check = now + 1.0
                    self._rewatch_if_replaced()
                self._dispatch_due(now)
                if now >= next_rescan or self._rescan_now.is_set():
                    self._rescan_now.clear()
                    next_rescan = now + self.cfg.rescan
                    n = self._scan()
                    if n:
                        event(logging.INFO, "scan", new=n, initial=False)
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
        event(
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
        self._work_q.put(Item(path, os.path.relpath(path, self.cfg.in_dir), stat_key(st), time.monotonic()))

    def _is_inflight(self, path: str) -> bool:
        with self._inflight_lock:
            return path in self._inflight

    def _release(self, path: str) -> None:
        with self._inflight_lock:
            self._inflight.discard(path)
