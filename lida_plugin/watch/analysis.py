"""The analysis stages: workers read, hash, dedupe and prepare files; one encoder thread judges batches.

Both go through :class:`~lida_plugin.attribute.Attributor` (``prepare`` per file, ``finish`` per
batch), the one attribution entry point every front end uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Any

from ..attribute import Result
from ..errors import InputError
from .config import BATCH_WAIT
from .items import Item, take_batch
from .logs import log
from .outputs import read_report
from .tracking import stat_key


# -- work items -----------------------------------------------------------------------------
class AnalysisStages:
    """Mixin of :class:`~lida_plugin.watch.service.Watcher`: the worker and encoder threads."""

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

    def _prepare(self, item: Item) -> None:
        got = self._read_stable(item)
        if got is None:
            return
        data, st = got
        # The attributor's per-file stage (decode, crops) on the bytes already read; decoding hashes them
        # too: one pass over them serves the journal, dedupe and the record.
        prepared = self.attributor.prepare(item.path, data)
        failure = prepared if isinstance(prepared, Result) else None
        if failure is not None and 0 <= time.time() - st.st_mtime < self.cfg.settle:
            # Written moments ago (a close or rename event let it through) and unreadable: likely a writer that
            # closes and reopens between chunks. Call it bad only after a full settle time without change.
            self._repend(item)
            return
        item.sha256 = hashlib.sha256(data).hexdigest() if failure is not None else prepared.sha256
        if not self._claim(item, st):
            return
        if failure is not None:
            item.record = failure.to_dict()
            self._write_q.put(item)
            return
        item.prepared = prepared
        self._encode_q.put(item)

    def _read_stable(self, item: Item) -> tuple[bytes, os.stat_result] | None:
        """The file's bytes and stat when they still match the stat it was queued with; else None (the
        item is released, re-pended, reported as an error or adopted from a killed run's report)."""
        from ..decode import read_bytes

        try:
            data = read_bytes(item.path)
            st = os.stat(item.path)
        except InputError as exc:
            if exc.reason == "no such file":
                self._release(item.path)  # gone before we got to it: nothing to report
                return None
            with contextlib.suppress(OSError):
                adopted = self._adoptable_report(item, os.stat(item.path))
                if adopted is not None and adopted.get("status") == "error":  # reported by a killed run
                    item.record, item.adopted = adopted, True
                    self._write_q.put(item)
                    return None
            self._fail(item, exc.reason)
            return None
        except FileNotFoundError:
            self._release(item.path)
            return None
        if stat_key(st) != item.stat or len(data) != st.st_size:  # still being written after all
            self._repend(item)
            return None
        return data, st

    def _claim(self, item: Item, st: os.stat_result) -> bool:
        """Whether ``item`` (hashed) is to be analysed here: False when its bytes are known (journal, a
        killed run's report, another name done or in flight), in which case it was handled already."""
        with self._claim_lock:
            if self.journal.get(item.path, item.sha256) is not None:  # known bytes, new mtime
                self.journal.update_stat(item.path, item.sha256, st.st_size, st.st_mtime_ns)
                self._release(item.path)
                return False
            adopted = self._adoptable_report(item, st)
            if adopted is not None:  # its report was written by a run killed before journaling it
                item.record, item.adopted = adopted, True
                item.duplicate_of = adopted.get("duplicate_of")
                if adopted.get("status") == "ok" and not item.duplicate_of:
                    self._adopt_original(item)
                self._write_q.put(item)
                return False
            first = self.journal.first_done(item.sha256)
            if first is not None and first.path != item.path:
                record = read_report(first.report, first.sha256)
                if record is not None:
                    item.record = record
                    if self.renamed_from(item.path) == first.path and not os.path.lexists(first.path):
                        item.renamed_from = first  # renamed in the folder: the same asset, its report moves
                    else:
                        item.duplicate_of = first.path
                    self._write_q.put(item)
                    return False
            claim = self._claims.get(item.sha256)
            if claim is not None:  # the same bytes are being analysed under another name right now
                item.duplicate_of = claim.path
                claim.waiters.append(item)
                return False
            self._claims[item.sha256] = item
        return True

    def _adopt_original(self, item: Item) -> None:
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

    def _adoptable_report(self, item: Item, st: os.stat_result) -> dict[str, Any] | None:
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

    def _repend(self, item: Item) -> None:
        with self._claim_lock:
            waiters = []
            if item.sha256 and self._claims.get(item.sha256) is item:
                del self._claims[item.sha256]
                waiters = item.waiters
        for it in [item, *waiters]:
            self._release(it.path)
            self.tracker.touch(it.path)

    def _fail(self, item: Item, reason: str) -> None:
        from ..attribute import error_result

        item.record = error_result(item.path, reason, self.attributor.model_id, self.attributor.store_id).to_dict()
        self._write_q.put(item)

    # -- encoder: one session, batches of what is ready ----------------------------------------------
    def _encode_loop(self) -> None:
        done = False
        while not done:
            item = self._encode_q.get()
            if item is None:
                return
            # Under load (files still queued for decoding) wait a little for a fuller batch: fewer, larger
            # encoder runs; at idle take what is there, so a lone file is not delayed.
            end = time.monotonic() + BATCH_WAIT
            wait = lambda end=end: end - time.monotonic() if self._work_q.qsize() else 0.0  # noqa: E731
            batch, done = take_batch(self._encode_q, item, self.cfg.batch, wait)
            results = [r.to_dict() for r in self.attributor.finish([b.prepared for b in batch])]  # never raises
            for b, rec in zip(batch, results, strict=True):
                b.record, b.prepared = rec, None
                self._write_q.put(b)
