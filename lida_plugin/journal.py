"""The watcher's journal: which ``(path, content hash)`` pairs are done, in SQLite.

One row per asset version. ``state`` is ``done`` (analysed), ``duplicate`` (same bytes as an
earlier asset, whose result it reuses) or ``error`` (could not be analysed; quarantined).
``processed`` counts completions of that pair: it is 1 unless an asset was processed twice,
which the watcher never does for a journaled pair. ``notified`` is 0 between the commit of a
row and the end of its ``lida_asset_done`` calls, so a restart re-delivers what a crash cut off.

The file is in WAL mode with ``synchronous=NORMAL``: a killed process loses nothing committed.
All methods are thread-safe (one connection behind a lock).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import LidaError
from .textsafe import text_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assets (
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('done', 'duplicate', 'error')),
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    report TEXT,
    duplicate_of TEXT,
    error TEXT,
    processed INTEGER NOT NULL DEFAULT 1,
    notified INTEGER NOT NULL DEFAULT 0,
    first_done REAL NOT NULL,
    last_done REAL NOT NULL,
    PRIMARY KEY (path, sha256)
);
CREATE INDEX IF NOT EXISTS assets_sha ON assets(sha256, state);
"""


@dataclass(frozen=True)
class Entry:
    path: str
    sha256: str
    state: str
    report: str | None
    duplicate_of: str | None
    error: str | None


@dataclass(frozen=True)
class Completion:
    """What the watcher journals for one asset."""

    path: str
    sha256: str
    state: str
    size: int
    mtime_ns: int
    report: str | None = None
    duplicate_of: str | None = None
    error: str | None = None


class Journal:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise LidaError(f"journal {self.path} cannot be opened: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def seen_stat(self, path: str, size: int, mtime_ns: int) -> Entry | None:
        """The entry of ``path`` whose recorded size and mtime match (the rescan's fast path: no hashing).
        Paths are kept as :func:`~lida_plugin.textsafe.text_path` (a name that is not UTF-8 with ``\\xHH``)."""
        with self._lock:
            row = self.conn.execute(
                "SELECT path, sha256, state, report, duplicate_of, error FROM assets"
                " WHERE path = ? AND size = ? AND mtime_ns = ? ORDER BY last_done DESC LIMIT 1",
                (text_path(path), size, mtime_ns),
            ).fetchone()
        return Entry(*row) if row else None

    def get(self, path: str, sha256: str) -> Entry | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT path, sha256, state, report, duplicate_of, error FROM assets WHERE path = ? AND sha256 = ?",
                (text_path(path), sha256),
            ).fetchone()
        return Entry(*row) if row else None

    def first_done(self, sha256: str) -> Entry | None:
        """The first asset with these bytes that was analysed (not a duplicate, not an error)."""
        with self._lock:
            row = self.conn.execute(
                "SELECT path, sha256, state, report, duplicate_of, error FROM assets"
                " WHERE sha256 = ? AND state = 'done' ORDER BY first_done LIMIT 1",
                (sha256,),
            ).fetchone()
        return Entry(*row) if row else None

    def update_stat(self, path: str, sha256: str, size: int, mtime_ns: int) -> None:
        """Same bytes, new size/mtime record (a touched file): keeps the rescan fast path fast."""
        with self._lock:
            self.conn.execute(
                "UPDATE assets SET size = ?, mtime_ns = ? WHERE path = ? AND sha256 = ?",
                (size, mtime_ns, text_path(path), sha256),
            )

    def record(self, items: Iterable[Completion]) -> list[tuple[str, str]]:
        """Commit completions in one transaction (``notified = 0`` until :meth:`mark_notified`).

        An ``error`` row of the same path with other bytes (a partial file, since completed or replaced) is
        superseded: deleted in the same transaction. Returns the ``(path, sha256)`` of those rows.
        """
        now = time.time()
        items = list(items)
        rows = [
            (text_path(c.path), c.sha256, c.state, c.size, c.mtime_ns, c.report and text_path(c.report),
             c.duplicate_of and text_path(c.duplicate_of), c.error and text_path(c.error), now, now)
            for c in items
        ]  # fmt: skip
        with self._lock, self.conn:
            self.conn.execute("BEGIN")
            stale = []
            for c in items:
                stale += self.conn.execute(
                    "DELETE FROM assets WHERE path = ? AND sha256 <> ? AND state = 'error' RETURNING path, sha256",
                    (text_path(c.path), c.sha256),
                ).fetchall()
            self.conn.executemany(
                "INSERT INTO assets (path, sha256, state, size, mtime_ns, report, duplicate_of, error,"
                " first_done, last_done)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (path, sha256) DO UPDATE SET state = excluded.state, size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, report = excluded.report, duplicate_of = excluded.duplicate_of,"
                " error = excluded.error, last_done = excluded.last_done, processed = processed + 1, notified = 0",
                rows,
            )
        return [tuple(r) for r in stale]

    def forget(self, path: str, sha256: str) -> None:
        """Delete the row of ``path`` with these bytes (an asset that moved to another name in the folder)."""
        with self._lock, self.conn:
            self.conn.execute("DELETE FROM assets WHERE path = ? AND sha256 = ?", (text_path(path), sha256))

    def mark_notified(self, keys: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            self.conn.executemany(
                "UPDATE assets SET notified = 1 WHERE path = ? AND sha256 = ?", [(text_path(p), h) for p, h in keys]
            )

    def unnotified(self) -> list[Entry]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT path, sha256, state, report, duplicate_of, error FROM assets"
                " WHERE notified = 0 ORDER BY last_done"
            ).fetchall()
        return [Entry(*r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Rows by state, plus ``rows`` and ``reprocessed`` (rows with ``processed > 1``: should be 0)."""
        with self._lock:
            out = dict(self.conn.execute("SELECT state, COUNT(*) FROM assets GROUP BY state").fetchall())
            out["rows"] = self.conn.execute("SELECT COUNT(*) FROM assets").fetchone()[0]
            out["reprocessed"] = self.conn.execute("SELECT COUNT(*) FROM assets WHERE processed > 1").fetchone()[0]
        return out
