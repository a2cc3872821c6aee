"""The output of ``lida batch``: Parquet parts under DEST, committed atomically, each asset once.

Layout of DEST::

    _lida_batch.json                         the job: model id, store id, output format version
    part-<run>-<seq>.parquet                 committed parts (one row per asset, :data:`SCHEMA`)
    .part-<run>-<seq>.tmp                    a part being written (never read; removed on the next run)
    .lida-batch.lock                         held (flock) while a job writes DEST

Exactly once, by construction: one process (the job's driver) writes every part; a part is
written to a temporary name, fsynced and renamed into place (the rename is the commit), and the
rows of a committed part *are* the list of assets it covers. On start, the assets of every
committed part are "done" and are not handed to the engine again; within a run an asset is
written at most once. Concurrent jobs on one DEST are refused (the lock). So a reader takes
``DEST/*.parquet`` as is, with no dedupe step: ``duckdb -c "select verdict, count(*) from
'DEST/*.parquet' group by 1"``, ``pandas.read_parquet(DEST)``, ``spark.read.parquet(DEST)``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import LidaError
from ..textsafe import text_path, utf8_safe

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
JOB_FILE = "_lida_batch.json"
LOCK_FILE = ".lida-batch.lock"
PART_GLOB = "part-*.parquet"


class DestError(LidaError):
    """DEST cannot be used: another job holds it, or it holds results of another model or store."""


def schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("sha256", pa.string()),
            ("status", pa.string()),
            ("verdict", pa.string()),
            ("generator", pa.string()),
            ("family", pa.string()),
            ("score", pa.float64()),
            ("ai_score", pa.float64()),
            ("model_id", pa.string()),
            ("store_id", pa.string()),
            ("error", pa.string()),
            ("record", pa.string()),
        ]
    )


def record_row(record: dict[str, Any]) -> dict[str, Any]:
    """One output row for an attribution record (the record itself goes, as JSON, in ``record``)."""
    det = record.get("detection") or {}
    err = record.get("error")
    man = record.get("manifest")
    if isinstance(man, dict) and man.get("status") == "error" and not err:
        err = f"manifest not written: {man.get('error')}"
    return {
        "path": record["path"],
        "sha256": (record.get("image") or {}).get("sha256"),
        "status": record.get("status"),
        "verdict": record.get("verdict"),
        "generator": record.get("generator"),
        "family": record.get("family"),
        "score": record.get("score"),
        "ai_score": det.get("ai_score"),
        "model_id": record.get("model_id"),
        "store_id": record.get("store_id"),
        "error": err,
        "record": json.dumps(record, sort_keys=True),
    }


def committed_parts(dest: str | os.PathLike[str]) -> list[Path]:
    return sorted(Path(dest).glob(PART_GLOB))


def committed_paths(dest: str | os.PathLike[str]) -> set[str]:
    """The assets in DEST's committed parts (what a rerun skips)."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in committed_parts(dest):
        try:
            done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        except Exception as exc:  # a committed part is complete by construction; say so if one is not
            raise DestError(f"{part}: cannot read this committed part ({exc}); move it away and rerun") from None
    return done


def read_results(dest: str | os.PathLike[str]):
    """All committed rows as one ``pyarrow.Table`` (empty with :func:`schema` when there are none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = committed_parts(dest)
    if not parts:
        return schema().empty_table()
    return pa.concat_tables([pq.read_table(p) for p in parts])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends (main thread, POSIX); elsewhere a no-op."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class PartSink:
    """Buffers rows and commits them as Parquet parts; the one writer of DEST while it is open."""

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        job: dict[str, Any],
        part_rows: int = 1000,
        part_seconds: float = 60.0,
    ) -> None:
        import fcntl

        self.dest = Path(dest)
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestError(f"--out {self.dest}: cannot create it: {exc.strerror or exc}") from None
        try:
            self._lock = open(self.dest / LOCK_FILE, "a+")  # noqa: SIM115 (held until close)
        except OSError as exc:
            raise DestError(f"--out {self.dest}: cannot write into it: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise DestError(f"--out {self.dest}: another lida batch job is writing it") from None
        try:
            self._check_job(job)
            for stale in self.dest.glob(".part-*.tmp"):  # a part a killed job never committed
                stale.unlink()
            self.done = committed_paths(self.dest)
        except BaseException:
            self._release()
            raise
        self.part_rows = max(1, part_rows)
        self.part_seconds = part_seconds
        self.run = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.seq = 0
        self.rows: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self._pending: set[str] = set()
        self._since = time.monotonic()
        self.written = 0

    def _check_job(self, job: dict[str, Any]) -> None:
        path = self.dest / JOB_FILE
        want = {"format": FORMAT_VERSION, **job}
        if path.exists():
            try:
                have = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise DestError(f"{path}: unreadable ({exc})") from None
            for key in ("format", "model_id", "store_id"):
                if have.get(key) != want.get(key):
                    raise DestError(
                        f"--out {self.dest} holds results made with {key} {have.get(key)!r}, this job has"
                        f" {want.get(key)!r}: results of two {key.replace('_', ' ')}s must not mix; use another --out"
                    )
            return
        if committed_parts(self.dest):
            raise DestError(f"--out {self.dest} holds parts but no {JOB_FILE}; use another --out")
        tmp = path.with_name(f".{JOB_FILE}.tmp")
        tmp.write_text(json.dumps(want | {"created": dt.datetime.now(dt.timezone.utc).isoformat()}, indent=2))
        os.replace(tmp, path)

    def is_done(self, path: str) -> bool:
        path = text_path(path)  # the Parquet column holds a name that is not UTF-8 with \xHH escapes
        return path in self.done or path in self._pending

    def add(self, record: dict[str, Any]) -> tuple[Path, list[dict[str, Any]]] | None:
        """Buffer one record; returns ``(part, records)`` when that made a part commit."""
        record = utf8_safe(record)
        path = record["path"]
        if self.is_done(path):  # never twice: the engines hand each asset out once, this is the guard
            log.warning("%s: already written; the second result is dropped", path)
            return None
        self._pending.add(path)
        self.rows.append(record_row(record))
        self.records.append(record)
        if len(self.rows) >= self.part_rows or time.monotonic() - self._since >= self.part_seconds:
            return self.commit()
        return None

    def commit(self) -> tuple[Path, list[dict[str, Any]]] | None:
        """Write the buffered rows as one part (temporary file, fsync, rename); None when empty.
        SIGINT/SIGTERM wait until the part is committed and its assets are marked done, so a stop
        never leaves a committed part whose rows are still buffered (they would be written twice)."""
        with _signals_deferred():
            return self._commit()

    def _commit(self) -> tuple[Path, list[dict[str, Any]]] | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._since = time.monotonic()
        if not self.rows:
            return None
        self.seq += 1
        name = f"part-{self.run}-{self.seq:05d}"
        tmp, final = self.dest / f".{name}.tmp", self.dest / f"{name}.parquet"
        table = pa.Table.from_pylist(self.rows, schema=schema())
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise DestError(f"cannot write {final}: {exc.strerror or exc}") from None
            raise
        records = self.records
        self.done |= self._pending
        self.written += len(self.rows)
        self.rows, self.records, self._pending = [], [], set()
        _fsync_dir(self.dest)
        return final, records

    def _release(self) -> None:
        import fcntl

        try:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
        finally:
            self._lock.close()

    def close(self) -> tuple[Path, list[dict[str, Any]]] | None:
        """Commit what is buffered and release DEST."""
        try:
            return self.commit()
        finally:
            self._release()
