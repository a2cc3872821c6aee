"""The writer stage: reports, quarantine, journal commit, hooks, in that order (what makes exactly-once)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..journal import Completion
from ..textsafe import utf8_safe
from .config import WRITE_GROUP
from .items import Item, take_batch
from .logs import event, log
from .outputs import read_report


class WriterStage:
    """Mixin of :class:`~lida_plugin.watch.service.Watcher`: the writer thread."""

    # -- writer: reports, quarantine, journal, hooks ---------------------------------------------------
    def _write_loop(self) -> None:
        """Completes what is ready in groups: reports fsync'd in parallel, one journal transaction per group."""
        last = False
        while not last:
            item = self._write_q.get()
            if item is None:
                return
            group, last = take_batch(self._write_q, item, WRITE_GROUP)
            try:
                self._complete(group)
            except BrokenPipeError:  # stdout's reader went away: said once, the watcher stops (service.run)
                for it in group + self._release_claims(group):
                    self._release(it.path)
            except Exception:  # e.g. disk full: nothing journaled, so the next rescan retries these files
                log.exception("event=writer_error files=%d", len(group))
                for it in group + self._release_claims(group):
                    self._release(it.path)

    def _complete(self, group: list[Item]) -> None:
        with self._claim_lock:  # from here on, whether an item is a duplicate is settled
            for it in group:
                it.sealed = True
        finished = self._finish_records(group)
        self._write_reports(finished)
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
        for it, _, outputs, _ in finished:
            if it.renamed_from:
                self._forget_renamed(it, outputs.get("report"))
        # Only now, with the bytes journaled, may another name with them be told it is a duplicate.
        waiters = self._release_claims(group)
        for w in waiters:  # same bytes under another name, analysed meanwhile: reuse the result
            w.record = next(it.record for it in group if it.sha256 == w.sha256)
        from ..manager import notify_asset_done

        for it, record, outputs, state in finished:
            if self.cfg.move_processed and state != "error":
                moved = self._move_processed(it.path, it.rel)
                if moved:
                    outputs["moved_to"] = moved
            notify_asset_done(self.pm, path=it.path, record=record, outputs=outputs)
            self._release(it.path)
            self.stats.add("adopted" if it.adopted else state)
            event(
                logging.INFO, "asset", path=it.rel, state=state, verdict=record.get("verdict"),
                generator=record.get("generator"), error=record.get("error"), duplicate_of=it.duplicate_of,
                latency_s=round(time.monotonic() - it.ready_at, 3),
            )  # fmt: skip
        self.journal.mark_notified((c.path, c.sha256) for c in completions)
        if waiters:
            self._complete(waiters)

    def _forget_renamed(self, it: Item, report: str | None) -> None:
        """``it`` took over the result of a name that is gone (renamed in the folder): that name's journal row,
        report and sidecar manifest go, so the folder's reports name the files that are there. After the new
        name's journal commit: a kill in between leaves the old row and report, as before this existed."""
        old = it.renamed_from
        self.journal.forget(old.path, old.sha256)
        if old.report and old.report != report and self.cfg.out_dir is not None:
            m = (read_report(old.report, old.sha256) or {}).get("manifest") or {}
            stale = [old.report]
            if m.get("status") == "ok" and m.get("kind") == "sidecar" and m.get("path"):
                stale.append(m["path"])  # the old name's sidecar (a new one was signed for the new name)
            for f in stale:
                with contextlib.suppress(OSError):
                    if Path(f).resolve().is_relative_to(self.cfg.out_dir.resolve()):
                        os.unlink(f)
        event(logging.INFO, "renamed", path=it.rel, renamed_from=old.path)

    def _finish_records(self, group: list[Item]) -> list[tuple[Item, dict[str, Any], dict[str, str], str]]:
        """Per item: its final record (path, ``duplicate_of``), its outputs so far (the manifest) and its state."""
        finished: list[tuple[Item, dict[str, Any], dict[str, str], str]] = []
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
        return finished

    def _write_reports(self, finished: list[tuple[Item, dict[str, Any], dict[str, str], str]]) -> None:
        """Reports, atomically and fsync'd in parallel, into the out folder; else JSON lines on stdout."""
        if self.cfg.out_dir is not None:
            writes = []
            for it, record, outputs, _ in finished:
                outputs["report"] = str(self._report_path(it.rel))
                if not it.adopted:
                    writes.append(
                        (self._report_path(it.rel), (json.dumps(utf8_safe(record), indent=2) + "\n").encode())
                    )
            list(self._sync_pool.map(lambda w: atomic_write(*w), writes))  # parallel fsyncs share journal commits
        else:
            with self._stdout_lock:
                try:
                    sys.stdout.write("".join(json.dumps(utf8_safe(r)) + "\n" for _, r, _, _ in finished))
                    sys.stdout.flush()
                except BrokenPipeError:
                    # nobody reads the records any more: stop rather than analyse (and lose) every file again;
                    # nothing of this group is journaled, so the next start delivers it
                    if not self.output_closed:
                        event(logging.WARNING, "stdout_closed", files=len(finished))
                    self.output_closed = True
                    self._stop.set()
                    raise

    def _release_claims(self, group: list[Item]) -> list[Item]:
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
            event(logging.WARNING, "manifest_failed", path=record.get("path"), error=m.get("error"))
            return None
        return m.get("path")

    def _redeliver_notifications(self) -> None:
        """``lida_asset_done`` for assets journaled by a run that died before telling the plugins."""
        from ..manager import notify_asset_done

        entries = self.journal.unnotified()
        for e in entries:
            record = read_report(e.report, None) if e.report else None
            if record is None:
                record = {"path": e.path, "status": "error" if e.state == "error" else "ok", "error": e.error}
            outputs = {"report": e.report} if e.report else {}
            notify_asset_done(self.pm, path=e.path, record=record, outputs=outputs)
        if entries:
            self.journal.mark_notified((e.path, e.sha256) for e in entries)
            event(logging.INFO, "redelivered", assets=len(entries))
