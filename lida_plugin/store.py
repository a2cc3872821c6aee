"""The registration database: generators and their exemplars, in SQLite.

One file per store (schema version 2; see docs/scale.md). Tables:

* ``meta``: ``schema_version``, ``store_id`` (random, fixed at creation), ``model_id`` and the
  crop geometry of the model whose embeddings it holds, ``keep`` (what new exemplars keep for
  re-embedding), ``vectors_epoch`` (changes whenever the embeddings are recomputed) and the
  persisted index's stamp.
* ``generators``: ``name`` (primary key), ``family``, ``notes``, ``added``, ``gid`` (a small
  integer used in the embedding blocks).
* ``exemplars``: ``sha256`` of the file's bytes (unique: registering the same image twice is a
  no-op), ``generator``, ``source`` (file name), image size, ``model_id``. About 300 bytes a row.
* ``embedding_blocks``: the embeddings, :data:`BLOCK_ROWS` exemplars per row, in exemplar-id
  order: their ids (int64), generator ids (int32), source names (NUL-terminated UTF-8) and
  embeddings (float32 ``[n, D]``). Loading a store reads these few large blobs into one
  contiguous array, not one row per exemplar. They are written in the same transaction as the
  exemplar rows, so a crash leaves both or neither.
* ``kept_crops``: per exemplar, optionally, what re-embedding it needs (``keep``): ``none``
  (the default; re-embedding then needs the original images), ``lowbits`` (``x & 7`` of the
  crops, zlib; enough for every low-bit fingerprint model, ~70 KB an exemplar) or ``raw`` (the
  raw 8-bit crops, horizontally delta-coded and zlib-compressed, lossless; any model, ~100 KB).
* ``ann``: the approximate index of a large store (:mod:`lida_plugin.ann`), in chunks.

``meta`` also holds ``blocks_token``, replaced by every write to the embedding blocks: with the
store id, ``vectors_epoch`` and the block counts it stamps the vector cache
(``<store>.lida-vectors``, :mod:`lida_plugin.vectorcache`), a memory-mapped copy of the blocks and
the index that :meth:`ExemplarStore.update_index` writes and opening uses when it matches the store
(docs/scale.md).

Writes are transactions; the file is in WAL mode so readers never block a writer. A store
made by another model is refused with a message naming ``lida store reembed``.

Schema version 1 stores (embedding and low-bit crops inline in ``exemplars``) are read as they
are; the first write migrates them to version 2 (after a backup copy), keeping their crops.

Layering: :class:`StoreStack` searches a user store over the read-only bundled default store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from . import vectorcache
from .decode import Decoded
from .errors import StoreError
from .fingerprint import lowbits
from .textsafe import text_path

log = logging.getLogger(__name__)

SCHEMA_VERSION = "2"
LEGACY_SCHEMA_VERSION = "1"
KEEP_MODES = ("none", "lowbits", "raw")
DEFAULT_KEEP = "none"
LOWBIT_FINGERPRINTS = ("scaled", "binary")
"""Fingerprint modes whose models see only ``x & 7``: low-bit crops re-embed them exactly."""
BLOCK_ROWS = 512
ANN_CHUNK = 64 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generators (
    name TEXT PRIMARY KEY,
    family TEXT,
    notes TEXT,
    added TEXT NOT NULL,
    gid INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS generators_gid ON generators(gid);
CREATE TABLE IF NOT EXISTS exemplars (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    generator TEXT NOT NULL REFERENCES generators(name) ON DELETE CASCADE,
    source TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    added TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exemplars_generator ON exemplars(generator);
CREATE TABLE IF NOT EXISTS kept_crops (
    exemplar INTEGER PRIMARY KEY REFERENCES exemplars(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS embedding_blocks (
    block INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    ids BLOB NOT NULL,
    gids BLOB NOT NULL,
    sources BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS ann (name TEXT NOT NULL, chunk INTEGER NOT NULL, data BLOB NOT NULL,
                                PRIMARY KEY (name, chunk));
"""

_MODEL_KEYS = ("model_id", "crop_size", "crop_count", "crop_align", "embedding_dim", "input_resize", "fingerprint_mode")


def bundled_store_path() -> Path:
    return Path(str(resources.files("lida_plugin") / "data" / "default-store.sqlite"))


def user_store_path(store: str | os.PathLike[str] | None = None) -> Path:
    """``store`` if given, else ``$LIDA_STORE``, else ``<user data dir>/lida-plugin/store.sqlite``."""
    if store:
        return Path(store)
    if os.environ.get("LIDA_STORE"):
        return Path(os.environ["LIDA_STORE"])
    from platformdirs import user_data_dir

    return Path(user_data_dir("lida-plugin", appauthor=False)) / "store.sqlite"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- kept crops --------------------------------------------------------------------------------
def encode_crops(crops: np.ndarray, kind: str) -> bytes:
    """``crops`` (``uint8 [K, 3, S, S]``, raw) as stored for ``kind`` (``lowbits`` or ``raw``)."""
    crops = np.ascontiguousarray(crops, np.uint8)
    if kind == "lowbits":
        return zlib.compress(lowbits(crops).tobytes(), 6)
    if kind == "raw":  # lossless: each row as differences from its left neighbour (mod 256), then zlib
        return zlib.compress(np.diff(crops, axis=-1, prepend=np.uint8(0)).tobytes(), 9)
    raise ValueError(f"crops kind {kind!r}")


def decode_crops(blob: bytes, kind: str, count: int, size: int) -> np.ndarray:
    arr = np.frombuffer(zlib.decompress(blob), np.uint8).reshape(count, 3, size, size)
    if kind == "lowbits":
        return arr
    if kind == "raw":
        return np.cumsum(arr, axis=-1, dtype=np.uint8)
    raise ValueError(f"crops kind {kind!r}")


def crops_usable(kind: str | None, fingerprint_mode: str) -> bool:
    """Can crops kept as ``kind`` be re-embedded by a model with ``fingerprint_mode``?"""
    return kind == "raw" or (kind == "lowbits" and fingerprint_mode in LOWBIT_FINGERPRINTS)


# -- lazy per-row columns ------------------------------------------------------------------------
class CodedColumn(Sequence):
    """``values[codes[i]]``: a per-row column of few distinct values, without a list of N items."""

    def __init__(self, codes: np.ndarray, values: Sequence) -> None:
        self.codes = codes
        self.values = list(values)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.values[c] for c in self.codes[i]]
        return self.values[self.codes[i]]


class NulStrings(Sequence):
    """The strings of NUL-terminated UTF-8 blobs, decoded one at a time on access."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        ends = np.flatnonzero(np.frombuffer(blob, np.uint8) == 0)
        self.ends = ends
        self.starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.blob[self.starts[i] : self.ends[i]].decode("utf-8", "surrogateescape")


class ChainColumn(Sequence):
    """Several sequences read as one."""

    def __init__(self, parts: Sequence[Sequence]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        p = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[p][i - int(self.offsets[p])]


def _nul_join(names: Iterable[str]) -> bytes:
    return b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names)


@dataclass(frozen=True)
class Generator:
    name: str
    family: str | None
    notes: str | None
    exemplars: int
    store: str


class ChainRows:
    """Several stores' embedding arrays read as one ``[N, D]`` array without copying them into one:
    a large store's rows stay in its memory-mapped vector cache. Indexing with an int, a slice or an
    integer array returns a new array of just those rows; ``np.asarray`` copies everything."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), self.parts[0].shape[1])
        self.dtype = self.parts[0].dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"ChainRows indices must be integers, got {idx.dtype}")
        flat = np.where(idx.ravel() < 0, idx.ravel() + len(self), idx.ravel())
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError("ChainRows index out of range")
        part = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty((flat.size, self.shape[1]), self.dtype)
        for p in np.unique(part):
            m = part == p
            out[m] = self.parts[p][flat[m] - self.offsets[p]]
        return out[0] if idx.ndim == 0 else out.reshape(*idx.shape, self.shape[1])

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate(self.parts)
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True)
class Segment:
    """Rows ``[start, start + length)`` of an :class:`Exemplars` come from one store; ``ann`` is that
    store's approximate index (:class:`lida_plugin.ann.AnnSearcher`), if it has a usable one, and
    ``embeddings`` those rows (set when several stores are searched together)."""

    start: int
    length: int
    ann: object | None = None
    embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class Exemplars:
    """A store's exemplars in memory, ready for search.

    The per-row columns are sequences (lists, or lazy columns for a store's rows); ``ids`` are the
    exemplar ids when the rows come from stores; ``segments`` say which rows came from which store
    and carry each store's approximate index (empty: search everything exactly).
    """

    embeddings: np.ndarray  # float32 [N, D], unit rows (a ChainRows over several stores with an index)
    generators: Sequence[str]
    families: Sequence[str | None]
    sources: Sequence[str]
    store_ids: Sequence[str]
    ids: np.ndarray | None = None
    segments: tuple[Segment, ...] = ()

    def __len__(self) -> int:
        return len(self.generators)

    @staticmethod
    def concat(parts: Iterable[Exemplars], dim: int) -> Exemplars:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Exemplars(np.zeros((0, dim), np.float32), [], [], [], [])
        if len(parts) == 1:
            return parts[0]
        indexed = any(s.ann is not None for p in parts for s in p.segments)
        segs, start = [], 0
        for p in parts:
            for s in p.segments or (Segment(0, len(p)),):
                rows = p.embeddings[s.start : s.start + s.length] if indexed else None
                segs.append(Segment(start + s.start, s.length, s.ann, rows))
            start += len(p)
        ids = None if any(p.ids is None for p in parts) else np.concatenate([p.ids for p in parts])
        return Exemplars(
            # with an approximate index somewhere, each store's rows stay where they are (a store with a
            # vector cache: memory-mapped) and are searched per segment; small stores are joined
            ChainRows([p.embeddings for p in parts]) if indexed else np.concatenate([p.embeddings for p in parts]),
            ChainColumn([p.generators for p in parts]),
            ChainColumn([p.families for p in parts]),
            ChainColumn([p.sources for p in parts]),
            ChainColumn([p.store_ids for p in parts]),
            ids,
            tuple(segs) if indexed else (),
        )


@dataclass(frozen=True)
class _Row:
    """One exemplar on its way into a store."""

    sha256: str
    generator: str
    source: str
    width: int
    height: int
    embedding: bytes
    crops: tuple[str, int, int, bytes] | None  # (kind, count, size, blob) or None


class ExemplarStore:
    """One SQLite store file. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        create: bool = False,
        immutable: bool = False,
        keep: str | None = None,
    ) -> None:
        """Open (or with ``create``, make) a store. ``immutable`` (read-only files in a read-only
        place, such as the bundled default in site-packages) tells SQLite not to look for
        journal or WAL files at all. ``keep`` sets what new exemplars keep for re-embedding
        (:data:`KEEP_MODES`; a new store defaults to :data:`DEFAULT_KEEP`)."""
        readonly = readonly or immutable
        self.path = Path(path)
        self.readonly = readonly
        self.immutable = immutable
        if keep is not None and keep not in KEEP_MODES:
            raise StoreError(f"keep {keep!r}: one of {', '.join(KEEP_MODES)}")
        self._check_file(create and not readonly)
        try:
            if readonly:
                flags = "mode=ro&immutable=1" if immutable else "mode=ro"
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{flags}", uri=True, timeout=30)
            else:
                self.conn = sqlite3.connect(self.path, timeout=30)
                # a new file: 16 KiB pages (set before WAL and the first table) make the big embedding
                # blobs short page chains, reading ~2-3x faster than the 4 KiB default (docs/scale.md)
                self.conn.execute("PRAGMA page_size=16384")
                self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                with self.conn:
                    self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    if self.conn.execute("SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is None:
                        self.conn.executescript(_SCHEMA)
                        self.conn.executemany(
                            "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                            [("schema_version", SCHEMA_VERSION), ("store_id", uuid.uuid4().hex[:16]),
                             ("created", _now()), ("keep", keep or DEFAULT_KEEP), ("next_id", "1"),
                             ("vectors_epoch", uuid.uuid4().hex[:16])],
                        )  # fmt: skip
            self.meta = dict(self.conn.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store {self.path} is not a readable lida store: {exc}") from None
        if self.meta.get("schema_version") not in (SCHEMA_VERSION, LEGACY_SCHEMA_VERSION):
            raise StoreError(
                f"store {self.path}: schema version {self.meta.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )
        if keep is not None and keep != self.keep:
            self.set_keep(keep)

    def _check_file(self, create: bool) -> None:
        """``StoreError`` unless the file is there (or, with ``create``, its folder can be made)."""
        if self.path.is_file() and not create and self.path.stat().st_size == 0:
            # SQLite would take an empty file as an empty database and attribution would write a schema into
            # whatever file the user named: only `lida register` (create) makes a store
            raise StoreError(f"store {self.path} is an empty file, not a lida store (lida register makes one)")
        if not self.path.exists():
            if not create:
                raise StoreError(f"store {self.path} does not exist")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store folder {self.path.parent}: {exc.strerror or exc}") from None

    def __enter__(self) -> ExemplarStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def file_state(self) -> tuple:
        """What changes when another process commits to this store: the sizes and times of the file and of
        its write-ahead log (two ``stat`` calls; :meth:`StoreStack.changed`)."""
        out = []
        for f in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = f.stat()
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    # -- identity -------------------------------------------------------------------------
    @property
    def store_id(self) -> str:
        return self.meta["store_id"]

    @property
    def model_id(self) -> str | None:
        return self.meta.get("model_id")

    @property
    def legacy(self) -> bool:
        """A schema version 1 store (read as it is; migrated on the first write)."""
        return self.meta.get("schema_version") == LEGACY_SCHEMA_VERSION

    @property
    def keep(self) -> str:
        """What new exemplars keep for re-embedding (:data:`KEEP_MODES`)."""
        return self.meta.get("keep", "lowbits" if self.legacy else DEFAULT_KEEP)

    def set_keep(self, keep: str) -> None:
        """Change what exemplars registered from now on keep (existing ones are unchanged)."""
        if keep not in KEEP_MODES:
            raise StoreError(f"keep {keep!r}: one of {', '.join(KEEP_MODES)}")
        self._writable()
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('keep', ?)", (keep,))
        self.meta["keep"] = keep

    def check_model(self, encoder) -> None:
        """Refuse to mix embeddings from two models."""
        if self.model_id is not None and self.model_id != encoder.model_id:
            if self.exemplar_count():  # what it kept cannot feed this model: say so instead of suggesting reembed
                self._check_crops(encoder.info, self.kept_crops_summary())
            raise StoreError(
                f"store {self.path} holds embeddings of model {self.model_id!r}, but the encoder is"
                f" {encoder.model_id!r}; run `lida store reembed --store {self.path}` to re-embed it"
                " with this model (a backup copy is kept)"
            )

    def _bind_model(self, encoder) -> None:
        if self.model_id is None:
            i = encoder.info
            rows = {"model_id": i.model_id, "crop_size": str(i.crop_size), "crop_count": str(i.crop_count),
                    "crop_align": str(i.crop_align), "embedding_dim": str(i.embedding_dim),
                    "input_resize": str(i.input_resize), "fingerprint_mode": i.fingerprint_mode}  # fmt: skip
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows.items())
            self.meta.update(rows)

    @staticmethod
    def _same_resize(src: ExemplarStore, new_resize: int) -> None:
        """Stored crops come from the image as the storing model saw it (native grid, or resized
        for a model with ``input_resize``); re-embedding them for a model that sees the image
        differently would be silently wrong."""
        old = int(src.meta.get("input_resize") or 0)
        if old != new_resize:
            what = {0: "the native pixel grid"}
            raise StoreError(
                f"store {src.path}: its crops were cut from {what.get(old, f'images resized to {old}px')}, the new"
                f" model needs {what.get(new_resize, f'images resized to {new_resize}px')}; register the original"
                " images again instead"
            )

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"store {self.path} is read-only (the bundled default store); register into a user store")
        if self.legacy:
            self._migrate()

    # -- schema migration ---------------------------------------------------------------------
    def _migrate(self) -> None:
        """Version 1 -> 2, in one transaction after a backup copy: embeddings into blocks, the
        inline low-bit crops into ``kept_crops`` (kept: re-embedding still works), generator ids."""
        dest = self.backup()
        log.warning("migrating store %s to schema version %s (a copy of the old file: %s)", self.path,
                    SCHEMA_VERSION, dest)  # fmt: skip
        c = self.conn
        c.execute("PRAGMA foreign_keys=OFF")
        try:
            c.execute("BEGIN IMMEDIATE")
            if c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] != LEGACY_SCHEMA_VERSION:
                c.execute("ROLLBACK")  # another process migrated it meanwhile
            else:
                c.execute("ALTER TABLE exemplars RENAME TO exemplars_v1")
                c.execute("DROP INDEX IF EXISTS exemplars_generator")
                c.execute("ALTER TABLE generators ADD COLUMN gid INTEGER")
                c.execute(
                    "UPDATE generators SET gid = (SELECT COUNT(*) FROM generators g2 WHERE g2.name < generators.name)"
                )
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(
                    "INSERT INTO exemplars SELECT id, sha256, generator, source, width, height, model_id, added"
                    " FROM exemplars_v1 ORDER BY id"
                )
                c.execute(
                    "INSERT INTO kept_crops SELECT id, 'lowbits', crop_count, crop_size, crops FROM exemplars_v1"
                    " ORDER BY id"
                )
                gids = dict(c.execute("SELECT name, gid FROM generators"))
                rows = c.execute("SELECT id, generator, source, embedding FROM exemplars_v1 ORDER BY id").fetchall()
                self._write_blocks([(i, gids[g], s, e) for i, g, s, e in rows], start_block=0)
                c.execute("DROP TABLE exemplars_v1")
                top = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM exemplars").fetchone()[0]
                c.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("keep", "lowbits"), ("next_id", str(top)),
                     ("vectors_epoch", uuid.uuid4().hex[:16]), ("migrated_from", LEGACY_SCHEMA_VERSION)],
                )  # fmt: skip
                c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        finally:
            c.execute("PRAGMA foreign_keys=ON")
        self.meta = dict(c.execute("SELECT key, value FROM meta"))

    # -- embedding blocks ---------------------------------------------------------------------
    def _write_blocks(self, rows: list[tuple[int, int, str, bytes]], start_block: int) -> None:
        """Write ``(id, gid, source, embedding bytes)`` rows (ascending ids) as blocks from ``start_block``."""
        self._blocks_changed()
        for b, i in enumerate(range(0, len(rows), BLOCK_ROWS)):
            part = rows[i : i + BLOCK_ROWS]
            self.conn.execute(
                "INSERT OR REPLACE INTO embedding_blocks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    start_block + b,
                    len(part),
                    np.array([r[0] for r in part], np.int64).tobytes(),
                    np.array([r[1] for r in part], np.int32).tobytes(),
                    _nul_join(r[2] for r in part),
                    b"".join(r[3] for r in part),
                ),
            )

    def _blocks_changed(self) -> None:
        """Inside a write transaction that changes the embedding blocks: a new ``blocks_token``, so any
        vector cache written before (:mod:`lida_plugin.vectorcache`) no longer matches the store."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('blocks_token', ?)", (uuid.uuid4().hex,))

    def vector_stamp(self) -> dict:
        """What identifies the current embedding blocks (for the vector cache): the store id, the
        vectors' epoch and model, ``blocks_token`` and the blocks' count, rows and last block number.
        Read it in the same transaction as the data it stamps."""
        keys = ("store_id", "vectors_epoch", "blocks_token", "model_id", "embedding_dim")
        meta = dict(self.conn.execute(f"SELECT key, value FROM meta WHERE key IN ({', '.join('?' * len(keys))})", keys))
        blocks, rows, last = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(MAX(block), -1) FROM embedding_blocks"
        ).fetchone()
        return {k: meta.get(k) for k in keys} | {"blocks": blocks, "rows": rows, "last_block": last}

    def _ann_stamp(self) -> dict | None:
        """The persisted index's stamp as the store has it now (None: no usable index)."""
        meta = dict(self.conn.execute("SELECT key, value FROM meta WHERE key LIKE 'ann_%' OR key='vectors_epoch'"))
        if not meta.get("ann_kind") or meta.get("ann_epoch") != meta.get("vectors_epoch"):
            return None
        return {k: meta.get(k) for k in ("ann_kind", "ann_epoch", "ann_rows", "ann_updated", "ann_token")}

    def _block_rows(self, block: tuple) -> list[tuple[int, int, str, bytes]]:
        n, ids, gids, sources, data = block
        width = len(data) // n
        names = NulStrings(sources)
        ids, gids = np.frombuffer(ids, np.int64), np.frombuffer(gids, np.int32)
        return [(int(ids[j]), int(gids[j]), names[j], data[j * width : (j + 1) * width]) for j in range(n)]

    def _append_blocks(self, rows: list[tuple[int, int, str, bytes]]) -> None:
        """Append rows to the last block (rewritten) and new ones; call inside a write transaction."""
        last = self.conn.execute(
            "SELECT block, n, ids, gids, sources, data FROM embedding_blocks ORDER BY block DESC LIMIT 1"
        ).fetchone()
        start = 0
        if last is not None:
            start = last[0] + 1
            if last[1] < BLOCK_ROWS:
                rows, start = self._block_rows(last[1:]) + rows, last[0]
        self._write_blocks(rows, start)

    def _insert_rows(self, rows: list[_Row], model_id: str) -> None:
        """Insert exemplars (rows, kept crops, embedding blocks); call inside a write transaction
        that has already written (so the block read below is inside it)."""
        if not rows:
            return
        c = self.conn
        c.execute("INSERT OR IGNORE INTO meta VALUES ('next_id', '1')")
        c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'next_id'", (len(rows),))
        first = int(c.execute("SELECT value FROM meta WHERE key='next_id'").fetchone()[0]) - len(rows)
        top = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM exemplars").fetchone()[0]
        if first < top:  # a store whose next_id lags (never expected): stay above every id ever used
            first = top
            c.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (str(top + len(rows)),))
        for name in {r.generator for r in rows}:
            c.execute(
                "UPDATE generators SET gid = (SELECT COALESCE(MAX(gid), -1) + 1 FROM generators)"
                " WHERE name = ? AND gid IS NULL",
                (name,),
            )
        gids = dict(c.execute("SELECT name, gid FROM generators"))
        now = _now()
        c.executemany(
            "INSERT INTO exemplars (id, sha256, generator, source, width, height, model_id, added)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (first + j, r.sha256, r.generator, r.source, r.width, r.height, model_id, now)
                for j, r in enumerate(rows)
            ],
        )
        c.executemany(
            "INSERT INTO kept_crops VALUES (?, ?, ?, ?, ?)",
            [(first + j, *r.crops) for j, r in enumerate(rows) if r.crops is not None],
        )
        self._append_blocks([(first + j, gids[r.generator], r.source, r.embedding) for j, r in enumerate(rows)])

    def _lock(self) -> None:
        """Start the write transaction with a write, so what it reads next is what it writes over."""
        self.conn.execute("UPDATE meta SET value = value WHERE key = 'store_id'")

    def _kept(self, crops: np.ndarray) -> tuple[str, int, int, bytes] | None:
        if self.keep == "none":
            return None
        return (self.keep, len(crops), crops.shape[-1], encode_crops(crops, self.keep))

    # -- writing --------------------------------------------------------------------------
    def add_generator(self, name: str, family: str | None = None, notes: str | None = None) -> None:
        self._writable()
        name = name.strip()
        if not name:
            raise StoreError("a generator needs a non-empty name")
        with self.conn:
            self.conn.execute(
                "INSERT INTO generators (name, family, notes, added) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE"
                " SET family=COALESCE(excluded.family, family), notes=COALESCE(excluded.notes, notes)",
                (name, family, notes, _now()),
            )

    def register(
        self,
        encoder,
        decoded: Decoded,
        generator: str,
        family: str | None = None,
        *,
        crops: np.ndarray | None = None,
        embedding: np.ndarray | None = None,
    ) -> bool:
        """Add one exemplar; returns False when that image (by content) is already registered.

        Raises :class:`StoreError` if the image is registered under another generator.
        """
        self._writable()
        self.check_model(encoder)
        if self._registered_as(decoded, generator):  # cheap look first: no embedding for a known image
            return False
        if crops is None:
            crops = encoder.crops_for(decoded)
        if embedding is None:
            embedding = encoder.embed_crop_sets([crops])[0]
        # Check and insert in one write transaction (BEGIN IMMEDIATE takes the write lock up front, waiting
        # out other writers up to the busy timeout): another process may have registered it meanwhile.
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            if self._registered_as(decoded, generator):
                return False
            self._bind_model(encoder)
            self.conn.execute(
                "INSERT INTO generators (name, family, notes, added) VALUES (?, ?, NULL, ?) ON CONFLICT(name) DO UPDATE"
                " SET family=COALESCE(excluded.family, family)",
                (generator, family, _now()),
            )
            row = _Row(decoded.sha256, generator, text_path(Path(decoded.path).name), decoded.width, decoded.height,
                       np.asarray(embedding, np.float32).tobytes(), self._kept(crops))  # fmt: skip
            self._insert_rows([row], encoder.model_id)
        return True

    def _registered_as(self, decoded: Decoded, generator: str) -> bool:
        """True if these bytes are registered as ``generator``; :class:`StoreError` if as another one."""
        row = self.conn.execute("SELECT generator FROM exemplars WHERE sha256=?", (decoded.sha256,)).fetchone()
        if row and row[0] != generator:
            raise StoreError(f"{decoded.path}: already registered in {self.path} as generator {row[0]!r}")
        return row is not None

    def remove_generator(self, name: str, *, backup: bool = True) -> int:
        """Delete a generator and its exemplars (after a backup copy); returns how many went."""
        self._writable()
        if not any(g.name == name for g in self.generators()):
            raise StoreError(f"store {self.path} has no generator {name!r}")
        if backup:
            self.backup()
        with self.conn:
            self._lock()
            n = self.conn.execute("DELETE FROM exemplars WHERE generator=?", (name,)).rowcount
            gid = self.conn.execute("SELECT gid FROM generators WHERE name=?", (name,)).fetchone()[0]
            self.conn.execute("DELETE FROM generators WHERE name=?", (name,))
            self._drop_from_blocks(gid)
        return n

    def _drop_from_blocks(self, gid: int | None) -> None:
        if gid is None:
            return
        blocks = self.conn.execute("SELECT block, n, ids, gids, sources, data FROM embedding_blocks ORDER BY block")
        for block, n, ids, gids, sources, data in blocks.fetchall():
            g = np.frombuffer(gids, np.int32)
            if not (g == gid).any():
                continue
            keep = [r for r in self._block_rows((n, ids, gids, sources, data)) if r[1] != gid]
            self._blocks_changed()
            self.conn.execute("DELETE FROM embedding_blocks WHERE block=?", (block,))
            if keep:
                self._write_blocks(keep, block)

    def kept_crops_summary(self) -> dict[str, int]:
        """How many exemplars kept which kind of crops (``none`` for those that kept nothing)."""
        if self.legacy:
            return {"lowbits": self.exemplar_count()}
        out = dict(self.conn.execute("SELECT kind, COUNT(*) FROM kept_crops GROUP BY kind"))
        none = self.exemplar_count() - sum(out.values())
        return out | ({"none": none} if none else {})

    def _crops_rows(self) -> Iterator[tuple[int, str | None, int, int, bytes | None, str]]:
        """``(id, kind, count, size, blob, source)`` per exemplar, in id order (kind None: nothing kept)."""
        if self.legacy:
            q = "SELECT id, 'lowbits', crop_count, crop_size, crops, source FROM exemplars ORDER BY id"
        else:
            q = ("SELECT e.id, k.kind, k.count, k.size, k.data, e.source FROM exemplars e"
                 " LEFT JOIN kept_crops k ON k.exemplar = e.id ORDER BY e.id")  # fmt: skip
        yield from self.conn.execute(q)

    def _check_crops(self, info, kinds: dict[str, int]) -> None:
        """Refuse (naming what to do) unless every exemplar kept crops ``info``'s model can use."""
        unusable = {
            k: v for k, v in kinds.items() if not crops_usable(None if k == "none" else k, info.fingerprint_mode)
        }
        if not unusable:
            return
        what = ", ".join(f"{v} kept {'no crops' if k == 'none' else f'{k} crops'}" for k, v in unusable.items())
        need = "raw crops" if "lowbits" in unusable else "crops"
        raise StoreError(
            f"store {self.path}: cannot re-embed for model {info.model_id!r} ({info.fingerprint_mode} fingerprint):"
            f" {what}; it needs {need}. Re-embedding needs the original images: register them again into a new"
            " store (`lida register --store NEW --generator NAME FILES...`), with `--keep raw` to be able to"
            " re-embed without them next time"
        )

    def reembed(self, encoder, *, backup: bool = True, progress: bool = False) -> int:
        """Re-embed every exemplar from its kept crops with ``encoder``.

        Every exemplar must have kept crops the new model can use (``raw``, or ``lowbits`` for a
        low-bit fingerprint model); otherwise nothing changes and the error says to register the
        original images again. The new model must use crops no larger than the stored ones (the
        top-left aligned ``S×S`` of each stored crop is used) and no more of them. A backup copy
        of the file is written first (``<store>.bak-<time>``). Returns the number re-embedded.
        """
        self._writable()
        new = encoder.info
        n = self.exemplar_count()
        if n:
            self._same_resize(self, new.input_resize)
            self._check_crops(new, self.kept_crops_summary())
        for _, _, _, size, _, source in self.conn.execute(
            "SELECT e.id, k.kind, k.count, k.size, NULL, e.source FROM exemplars e JOIN kept_crops k"
            " ON k.exemplar = e.id WHERE k.size < ? LIMIT 1",
            (new.crop_size,),
        ):
            raise StoreError(
                f"store {self.path}: exemplar {source} kept {size}px crops, the new model needs"
                f" {new.crop_size}px; register the original images again instead"
            )
        if backup and n:
            self.backup()
        from tqdm import tqdm

        embs: dict[int, bytes] = {}
        for eid, kind, count, size, blob, _ in tqdm(
            self._crops_rows(), total=n, desc="re-embedding", unit="exemplar", disable=not progress
        ):
            crops = decode_crops(blob, kind, count, size)
            crops = np.ascontiguousarray(crops[: new.crop_count, :, : new.crop_size, : new.crop_size])
            embs[eid] = np.asarray(encoder.embed_crop_sets([crops])[0], np.float32).tobytes()
        with self.conn:
            self.conn.execute("UPDATE exemplars SET model_id=?", (new.model_id,))
            blocks = self.conn.execute("SELECT n, ids, gids, sources, data FROM embedding_blocks ORDER BY block")
            rows = [r for b in blocks.fetchall() for r in self._block_rows(b)]
            self.conn.execute("DELETE FROM embedding_blocks")
            self._write_blocks([(i, g, s, embs[i]) for i, g, s, _ in rows], 0)
            self.conn.execute(f"DELETE FROM meta WHERE key IN ({', '.join('?' * len(_MODEL_KEYS))})", _MODEL_KEYS)
            for k in _MODEL_KEYS:
                self.meta.pop(k, None)
            self._bind_model(encoder)
            self._new_epoch()
        return len(embs)

    def _new_epoch(self) -> None:
        """The embeddings were recomputed: any persisted index is for other vectors now."""
        epoch = uuid.uuid4().hex[:16]
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('vectors_epoch', ?)", (epoch,))
        self.conn.execute("DELETE FROM ann")
        self.conn.execute("DELETE FROM meta WHERE key LIKE 'ann_%'")
        self.meta = {k: v for k, v in self.meta.items() if not k.startswith("ann_")} | {"vectors_epoch": epoch}

    def compact(self) -> None:
        """Rewrite the file small and self-contained (no WAL), e.g. before shipping it."""
        self._writable()
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.execute("VACUUM")

    def backup(self) -> Path:
        """A timestamped copy beside the store (``<store>.bak-YYYYmmdd-HHMMSS``)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.path.with_name(f"{self.path.name}.bak-{stamp}")
        n = 1
        while dest.exists():
            dest, n = self.path.with_name(f"{self.path.name}.bak-{stamp}-{n}"), n + 1
        self.backup_to(dest)
        log.info("backup of %s written to %s", self.path, dest)
        return dest

    def backup_to(self, dest: str | os.PathLike[str]) -> Path:
        """A consistent copy of the whole store at ``dest`` (SQLite's online backup)."""
        dest = Path(dest)
        if dest.exists():
            raise StoreError(f"{dest} exists; not overwriting it")
        if not dest.parent.is_dir():
            raise StoreError(f"{dest}: the folder {dest.parent} does not exist")
        try:
            out = sqlite3.connect(dest)
            try:
                self.conn.backup(out)
            finally:
                out.close()
        except sqlite3.Error as exc:
            with contextlib.suppress(OSError):
                dest.unlink(missing_ok=True)  # a partial copy is no copy
            raise StoreError(f"{dest}: cannot write the copy: {exc}") from None
        return dest

    def _export_rows(self) -> Iterator[tuple]:
        """``(sha, generator, source, w, h, model_id, embedding bytes, kind, count, size, blob)`` in id order."""
        if self.legacy:
            yield from self.conn.execute(
                "SELECT sha256, generator, source, width, height, model_id, embedding, 'lowbits', crop_count,"
                " crop_size, crops FROM exemplars ORDER BY id"
            )
            return
        emb = {}
        for b in self.conn.execute("SELECT n, ids, gids, sources, data FROM embedding_blocks ORDER BY block"):
            emb.update((i, e) for i, _, _, e in self._block_rows(b))
        for r in self.conn.execute(
            "SELECT e.id, e.sha256, e.generator, e.source, e.width, e.height, e.model_id, k.kind, k.count, k.size,"
            " k.data FROM exemplars e LEFT JOIN kept_crops k ON k.exemplar = e.id ORDER BY e.id"
        ):
            yield (*r[1:7], emb[r[0]], *r[7:])

    def import_from(self, other: ExemplarStore, encoder, generators: set[str] | None = None) -> tuple[int, int]:
        """Copy exemplars from ``other`` (re-embedding them from their kept crops when its model
        differs). Kept crops are copied unless this store keeps none.

        Returns ``(added, skipped)``; images already here are skipped.
        """
        self._writable()
        self.check_model(encoder)
        info = encoder.info
        added = skipped = 0
        fams = {g.name: (g.family, g.notes) for g in other.generators()}
        if other.model_id is not None and other.model_id != encoder.model_id and other.exemplar_count():
            self._same_resize(other, info.input_resize)
        with self.conn:
            self._lock()
            self._bind_model(encoder)
            rows: list[_Row] = []
            seen: set[str] = set()
            for sha, gen, source, w, h, mid, emb, kind, count, size, blob in other._export_rows():
                if generators and gen not in generators:
                    continue
                if sha in seen or self.conn.execute("SELECT 1 FROM exemplars WHERE sha256=?", (sha,)).fetchone():
                    skipped += 1
                    continue
                seen.add(sha)
                if mid != encoder.model_id:
                    if not crops_usable(kind, info.fingerprint_mode):
                        other._check_crops(info, {kind or "none": 1})
                    if size < info.crop_size:
                        raise StoreError(
                            f"{other.path}: exemplar {source} has {size}px crops, too small for this model"
                        )
                    crops = decode_crops(blob, kind, count, size)
                    crops = np.ascontiguousarray(crops[: info.crop_count, :, : info.crop_size, : info.crop_size])
                    emb = np.asarray(encoder.embed_crop_sets([crops])[0], np.float32).tobytes()
                family, notes = fams.get(gen, (None, None))
                self.conn.execute(
                    "INSERT INTO generators (name, family, notes, added) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(name) DO NOTHING",
                    (gen, family, notes, _now()),
                )
                kept = None if self.keep == "none" or kind is None else (kind, count, size, blob)
                rows.append(_Row(sha, gen, source, w, h, emb, kept))
                added += 1
                if len(rows) >= 4 * BLOCK_ROWS:
                    self._insert_rows(rows, encoder.model_id)
                    rows = []
            self._insert_rows(rows, encoder.model_id)
        return added, skipped

    # -- the approximate index ----------------------------------------------------------------
    def _ann_bytes(self, name: str) -> bytes | None:
        parts = self.conn.execute("SELECT data FROM ann WHERE name=? ORDER BY chunk", (name,)).fetchall()
        return b"".join(p[0] for p in parts) if parts else None

    def load_index(self, exemplars: Exemplars):
        """The persisted approximate index bound to ``exemplars`` (this store's rows), or None when
        there is none, it is for other vectors (re-embedded since), or it cannot be loaded."""
        from . import ann

        kind = self.meta.get("ann_kind")
        if self.legacy or not kind or self.meta.get("ann_epoch") != self.meta.get("vectors_epoch"):
            return None
        if not ann.available(kind):
            log.warning("store %s has a %s index but its library is not installed (pip install 'lida-plugin[index]');"
                        " searching exactly", self.path, kind)  # fmt: skip
            return None
        data, covered = self._ann_bytes("index"), self._ann_bytes("ids")
        if data is None or covered is None:
            return None
        return ann.AnnSearcher(ann.from_bytes(kind, data), exemplars.embeddings, exemplars.ids,
                               np.frombuffer(covered, np.int64))  # fmt: skip

    def update_index(self, kind: str | None = None, *, rebuild: bool = False, min_rows: int | None = None) -> str:
        """Bring the persisted approximate index up to date; returns what was done.

        Below ``min_rows`` (default :data:`lida_plugin.ann.EXACT_BELOW`) exemplars the store is
        searched exactly and any index is dropped. Otherwise the index is built (``kind``, default
        :data:`lida_plugin.ann.DEFAULT_KIND`) when there is none, when the vectors changed
        (re-embedding) or with ``rebuild``; else exemplars registered or removed since are added to
        or removed from it (no retraining; rebuilt once the store has grown 4x since it was trained).
        """
        from . import ann

        self._writable()
        min_rows = ann.EXACT_BELOW if min_rows is None else min_rows
        kind = kind or self.meta.get("ann_kind") or ann.DEFAULT_KIND
        if self.exemplar_count() < min_rows and not self.meta.get("ann_kind"):
            return "none (store below the exact-search threshold)"
        ex = self.exemplars(index=False)
        epoch = self.meta.get("vectors_epoch")
        if len(ex) < min_rows:
            if self.meta.get("ann_kind"):
                with self.conn:
                    self._new_epoch_index_only()
                vectorcache.remove(self.vector_cache_path)
                return "dropped (store below the exact-search threshold)"
            return "none (store below the exact-search threshold)"
        if not ann.available(kind):
            msg = f"not built: the {kind} index needs its library (pip install 'lida-plugin[index]'); searching exactly"
            log.warning("store %s has %d exemplars: %s", self.path, len(ex), msg)
            return msg
        made = self._index_for(ex, kind, epoch, rebuild)
        if made is None:
            return f"up to date ({kind}, {len(ex)} exemplars); {self.write_vector_cache()}"
        index, covered, trained, what = made
        del ex
        if not self._save_index(index.to_bytes(), covered, kind, epoch, trained):
            return "skipped (the store was re-embedded meanwhile)"
        del index
        return f"{what} ({len(covered)} exemplars indexed); {self.write_vector_cache()}"

    def _index_for(self, ex: Exemplars, kind: str, epoch: str | None, rebuild: bool):
        """``(index, covered ids, trained rows, what was done)`` for ``ex``: the persisted index with the
        exemplars registered or removed since applied, or a new one when it cannot be reused; None when
        the persisted one is already up to date."""
        from . import ann

        old = None
        trained = int(self.meta.get("ann_trained_rows") or 0)
        fresh = self.meta.get("ann_kind") == kind and self.meta.get("ann_epoch") == epoch
        if fresh and not rebuild and len(ex) <= 4 * trained:
            old = self.load_index(ex)
        if old is None:
            return ann.build(kind, ex.embeddings, ex.ids), ex.ids, len(ex), f"built {kind}"
        index = old.index
        removed = np.setdiff1d(old.covered, ex.ids, assume_unique=True)
        added = ex.ids[old.tail]
        if not len(removed) and not len(added):
            return None
        index.remove(removed)
        index.add(ex.embeddings[old.tail], added)
        covered = np.union1d(np.setdiff1d(old.covered, removed, assume_unique=True), added)
        return index, covered, trained, f"updated {kind}: +{len(added)} -{len(removed)}"

    def _save_index(self, data: bytes, covered, kind: str, epoch: str | None, trained: int) -> bool:
        """Persist an index (``data``, covering ids ``covered``) built for vectors ``epoch``; False, and
        nothing written, when the store was re-embedded meanwhile."""
        with self.conn:
            self.conn.execute("UPDATE meta SET value=value WHERE key='vectors_epoch'")  # take the write lock
            now = self.conn.execute("SELECT value FROM meta WHERE key='vectors_epoch'").fetchone()[0]
            if now != epoch:
                return False
            self.conn.execute("DELETE FROM ann")
            blobs = [("index", data), ("ids", np.asarray(covered, np.int64).tobytes())]
            self.conn.executemany(
                "INSERT INTO ann VALUES (?, ?, ?)",
                [(name, j, blob[o : o + ANN_CHUNK]) for name, blob in blobs
                 for j, o in enumerate(range(0, max(1, len(blob)), ANN_CHUNK))],
            )  # fmt: skip
            stamp = {"ann_kind": kind, "ann_epoch": epoch, "ann_trained_rows": str(trained),
                     "ann_rows": str(len(covered)), "ann_updated": _now(), "ann_token": uuid.uuid4().hex}  # fmt: skip
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", stamp.items())
            self.meta.update(stamp)
        return True

    def _new_epoch_index_only(self) -> None:
        self.conn.execute("DELETE FROM ann")
        self.conn.execute("DELETE FROM meta WHERE key LIKE 'ann_%'")
        self.meta = {k: v for k, v in self.meta.items() if not k.startswith("ann_")}

    # -- reading --------------------------------------------------------------------------
    def generators(self) -> list[Generator]:
        rows = self.conn.execute(
            "SELECT g.name, g.family, g.notes, COUNT(e.id) FROM generators g"
            " LEFT JOIN exemplars e ON e.generator = g.name GROUP BY g.name ORDER BY g.name"
        )
        return [Generator(n, f, notes, c, str(self.path)) for n, f, notes, c in rows]

    def exemplar_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM exemplars").fetchone()[0]

    def exemplars_by_row(self) -> Exemplars:
        """The exemplars read one row at a time (schema version 1 stores; a cross-check of the blocks)."""
        if self.legacy:
            rows = self.conn.execute(
                "SELECT e.embedding, e.generator, g.family, e.source, e.id FROM exemplars e"
                " JOIN generators g ON g.name = e.generator ORDER BY e.id"
            ).fetchall()
        else:
            emb = {}
            for b in self.conn.execute("SELECT n, ids, gids, sources, data FROM embedding_blocks"):
                emb.update((i, e) for i, _, _, e in self._block_rows(b))
            rows = [
                (emb[i], g, f, s, i)
                for g, f, s, i in self.conn.execute(
                    "SELECT e.generator, g.family, e.source, e.id FROM exemplars e"
                    " JOIN generators g ON g.name = e.generator ORDER BY e.id"
                )
            ]
        dim = int(self.meta.get("embedding_dim", 0))
        if not rows:
            return Exemplars(np.zeros((0, dim), np.float32), [], [], [], [], np.zeros(0, np.int64))
        emb = np.stack([np.frombuffer(r[0], np.float32) for r in rows])
        return Exemplars(
            emb, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [self.store_id] * len(rows),
            np.array([r[4] for r in rows], np.int64),
        )  # fmt: skip

    def exemplars(self, *, index: bool = True) -> Exemplars:
        """All exemplars, embeddings as one contiguous array read from the blocks; with ``index``,
        bound to the store's persisted approximate index when it has a usable one."""
        if self.legacy:
            return self.exemplars_by_row()
        own = not self.conn.in_transaction
        if own:  # one read transaction: the count, the blocks and the generators agree
            self.conn.execute("BEGIN")
        try:
            return self._exemplars(index, own)
        finally:
            if own and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _exemplars(self, index: bool, own: bool) -> Exemplars:
        stamp = self.vector_stamp()
        cached = self._load_cache(stamp)
        if cached is not None:
            a = cached.arrays
            emb, ids, gids, names = a["embeddings"], a["ids"], a["gids"], a["sources"].tobytes()
        else:
            emb, ids, gids, names = self._block_arrays()
        n = len(ids)
        gens = self.conn.execute("SELECT gid, name, family FROM generators WHERE gid IS NOT NULL").fetchall()
        ann_now = self._ann_stamp() if cached is not None and index else None
        if own:
            self.conn.execute("COMMIT")
        self._cached_keys = (stamp, cached.arrays["keys"]) if cached is not None and "keys" in cached.arrays else None
        top = max((g[0] for g in gens), default=-1) + 1
        gname: list[str] = [""] * top
        gfam: list[str | None] = [None] * top
        for gid, name, fam in gens:
            gname[gid], gfam[gid] = name, fam
        ex = Exemplars(
            emb,
            CodedColumn(gids, gname),
            CodedColumn(gids, gfam),
            NulStrings(names),
            CodedColumn(np.zeros(n, np.int8), [self.store_id]),
            ids,
        )
        if index and n:
            searcher = self._cached_index(cached, ann_now, ex) if ann_now is not None else None
            if searcher is None:
                searcher = self.load_index(ex)
            if searcher is not None:
                ex = dataclasses.replace(ex, segments=(Segment(0, n, searcher),))
        return ex

    def _block_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
        """``(embeddings, ids, generator ids, NUL-joined sources)`` of every block, read from SQLite."""
        dim = int(self.meta.get("embedding_dim", 0))
        (n,) = self.conn.execute("SELECT COALESCE(SUM(n), 0) FROM embedding_blocks").fetchone()
        emb = np.empty((n, dim), np.float32)
        ids = np.empty(n, np.int64)
        gids = np.empty(n, np.int32)
        names: list[bytes] = []
        o = 0
        for k, i, g, s, data in self.conn.execute(
            "SELECT n, ids, gids, sources, data FROM embedding_blocks ORDER BY block"
        ):
            emb[o : o + k] = np.frombuffer(data, np.float32).reshape(k, dim)
            ids[o : o + k] = np.frombuffer(i, np.int64)
            gids[o : o + k] = np.frombuffer(g, np.int32)
            names.append(s)
            o += k
        return emb, ids, gids, b"".join(names)

    # -- the vector cache (lida_plugin.vectorcache) ------------------------------------------
    @property
    def vector_cache_path(self) -> Path:
        return vectorcache.sidecar_path(self.path)

    def _load_cache(self, stamp: dict) -> vectorcache.Cached | None:
        """The vector cache beside the store if it matches ``stamp`` (read in this transaction) and
        agrees with the store's first and last blocks; else None (logged: the blocks are read)."""
        path = self.vector_cache_path
        if not stamp["rows"] or not stamp.get("blocks_token") or not path.exists():
            return None
        cached = vectorcache.load(path, stamp)
        if cached is None:
            return None
        problem = self._cache_disagrees(cached, stamp)
        if problem:
            log.warning("%s does not agree with its store (%s); reading the store instead", path, problem)
            return None
        return cached

    def _cache_disagrees(self, cached: vectorcache.Cached, stamp: dict) -> str | None:
        """Why the cache's arrays do not fit the store, or None: shapes, and the first and last
        blocks' ids and embeddings compared byte for byte with SQLite's."""
        a, n, dim = cached.arrays, stamp["rows"], int(stamp.get("embedding_dim") or 0)
        need = {"embeddings": (n, dim), "ids": (n,), "gids": (n,)}
        if any(k not in a or a[k].shape != shape for k, shape in need.items()) or "sources" not in a:
            return "array shapes"
        if int(np.count_nonzero(a["sources"] == 0)) != n or ("keys" in a and a["keys"].shape != (n,)):
            return "sources or keys"
        for which, order in (("first", "ASC"), ("last", "DESC")):
            k, ids, data = self.conn.execute(
                f"SELECT n, ids, data FROM embedding_blocks ORDER BY block {order} LIMIT 1"
            ).fetchone()
            part = slice(0, k) if which == "first" else slice(n - k, n)
            if a["ids"][part].tobytes() != ids or a["embeddings"][part].tobytes() != data:
                return f"{which} block"
        return None

    def _cached_index(self, cached: vectorcache.Cached, ann_now: dict, ex: Exemplars):
        """The approximate index from the cache, if the cache holds the store's current one."""
        from . import ann

        if cached.ann != ann_now or "index" not in cached.arrays or not ann.available(ann_now["ann_kind"]):
            return None
        try:
            index = ann.from_bytes(ann_now["ann_kind"], cached.arrays["index"])
        except Exception as exc:  # a cache that passed its checks but does not load: read the store's copy
            log.warning("%s: its index does not load (%s); reading the store's", self.vector_cache_path, exc)
            return None
        return ann.AnnSearcher(index, ex.embeddings, ex.ids, cached.arrays["ann_ids"])

    def write_vector_cache(self) -> str:
        """Write the vector cache beside the store (or leave it, if it is up to date); returns what was done.
        Called by :meth:`update_index`; a failure to write is logged, never raised."""
        path = self.vector_cache_path
        with self.conn:  # stores written before blocks had a token get one
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('blocks_token', ?)", (uuid.uuid4().hex,))
        self.conn.execute("BEGIN")  # one read transaction: the arrays and their stamps agree
        try:
            stamp, ann_now = self.vector_stamp(), self._ann_stamp()
            cached = vectorcache.load(path, stamp) if path.exists() else None
            if cached is not None and cached.ann == ann_now and not self._cache_disagrees(cached, stamp):
                return "vector cache up to date"
            del cached
            emb, ids, gids, names = self._block_arrays()
            arrays = {"embeddings": emb, "ids": ids, "gids": gids, "sources": np.frombuffer(names, np.uint8)}
            rows = self.conn.execute("SELECT id, sha256 FROM exemplars ORDER BY id").fetchall()
            if len(rows) == len(ids) and all(r[0] == i for r, i in zip(rows, ids.tolist(), strict=True)):
                arrays["keys"] = np.fromiter((int(r[1][:16], 16) for r in rows), np.uint64, len(rows))
            if ann_now is not None:
                arrays["index"] = np.frombuffer(self._ann_bytes("index") or b"", np.uint8)
                arrays["ann_ids"] = np.frombuffer(self._ann_bytes("ids") or b"", np.int64)
        finally:
            self.conn.execute("ROLLBACK")
        try:
            size = vectorcache.write(path, stamp, arrays, ann_now)
        except OSError as exc:
            log.warning("vector cache %s not written (%s); the store is read from SQLite", path, exc)
            return f"vector cache not written: {exc}"
        return f"vector cache written ({size / 2**20:.0f} MiB)"

    def content_keys(self) -> np.ndarray:
        """The first 64 bits of every exemplar's SHA-256 as ``uint64``, in :meth:`exemplars` order (by id)."""
        cached = getattr(self, "_cached_keys", None)
        if cached is not None and not self.legacy and cached[0] == self.vector_stamp():
            return np.asarray(cached[1])
        rows = self.conn.execute("SELECT sha256 FROM exemplars ORDER BY id").fetchall()
        return np.fromiter((int(r[0][:16], 16) for r in rows), dtype=np.uint64, count=len(rows))

    def info(self) -> dict:
        return {
            "path": str(self.path),
            "store_id": self.store_id,
            "model_id": self.model_id,
            "readonly": self.readonly,
            "schema_version": self.meta.get("schema_version"),
            "keep": self.keep,
            "generators": len(self.generators()),
            "exemplars": self.exemplar_count(),
            "kept_crops": self.kept_crops_summary(),
            "index": {k[4:]: v for k, v in self.meta.items() if k.startswith("ann_")} or None,
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
            "vector_cache": str(self.vector_cache_path) if self.vector_cache_path.exists() else None,
            "meta": dict(self.meta),
        }


class StoreStack:
    """The stores searched for one run: the user store (if any) over the bundled default."""

    def __init__(self, stores: list[ExemplarStore], encoder) -> None:
        for s in stores:
            s.check_model(encoder)
        self.stores = stores
        self.encoder = encoder
        self._states = [s.file_state() for s in stores]  # before reading: a commit meanwhile shows as a change
        self.exemplars = Exemplars.concat((s.exemplars() for s in stores), encoder.info.embedding_dim)
        keys = np.concatenate([s.content_keys() for s in stores]) if stores else np.zeros(0, np.uint64)
        self._key_order = np.argsort(keys, kind="stable")
        self._keys = keys[self._key_order]

    def changed(self) -> bool:
        """Whether a store file changed since this stack read it (another process registered or removed
        exemplars): a long-running process (``lida serve``, ``lida watch``, a host) then reads it again."""
        return any(not s.immutable and s.file_state() != st for s, st in zip(self.stores, self._states, strict=True))

    def reopened(self) -> StoreStack:
        """A new stack over the same files, read now, with connections of the calling thread (read-only: an
        attributing process does not write); :class:`StoreError` when one no longer opens."""
        fresh: list[ExemplarStore] = []
        try:
            for s in self.stores:
                fresh.append(ExemplarStore(s.path, readonly=True, immutable=s.immutable))
            return StoreStack(fresh, self.encoder)
        except BaseException:
            for f in fresh:
                f.close()
            raise

    def accept_current(self) -> None:
        """Take the files' present state as seen (after a reload that failed: not retried on every call)."""
        self._states = [s.file_state() for s in self.stores]

    def exact_match(self, sha256: str) -> int | None:
        """Index (into :attr:`exemplars`) of the exemplar whose bytes hash to ``sha256``, or None. Matched on
        the hash's first 64 bits, held in memory (8 bytes an exemplar; a false match needs a 64-bit collision)."""
        try:
            key = np.uint64(int(sha256[:16], 16))
        except (TypeError, ValueError):
            return None
        i = int(np.searchsorted(self._keys, key))
        return int(self._key_order[i]) if i < len(self._keys) and self._keys[i] == key else None

    @property
    def store_id(self) -> str:
        """Identifies the combination searched (joined store ids, user store first)."""
        return "+".join(s.store_id for s in self.stores) or "none"

    def generators(self) -> list[Generator]:
        return [g for s in self.stores for g in s.generators()]

    def close(self) -> None:
        for s in self.stores:
            s.close()


def _open_for_reading(path: Path) -> ExemplarStore:
    """A user store for attribution: opened read-write as usual (SQLite's WAL wants its -shm file beside
    it), else, on a read-only mount or in a folder this user may not write, read-only, else immutable (no
    journal files looked for). When none opens, the first error is the one reported."""
    try:
        return ExemplarStore(path)
    except StoreError as first:
        for kwargs in ({"readonly": True}, {"immutable": True}):
            try:
                st = ExemplarStore(path, **kwargs)
            except StoreError:
                continue
            log.info("store %s opened read-only (%s)", path, first)
            return st
        raise first from None


def open_stack(encoder, store: str | os.PathLike[str] | None = None, *, use_default: bool = True) -> StoreStack:
    """Open the stores for attribution: the user store if its file exists, over the default."""
    stores = []
    upath = user_store_path(store)
    if upath.exists():
        stores.append(_open_for_reading(upath))
    elif store:
        raise StoreError(f"store {upath} does not exist (register a generator into it first)")
    elif os.environ.get("LIDA_STORE"):  # a deployment may set it before the first register: said, not refused
        log.warning("LIDA_STORE=%s does not exist (yet): only the bundled default store is searched", upath)
    dpath = bundled_store_path()
    if use_default and dpath.exists() and dpath.resolve() != upath.resolve():
        default = ExemplarStore(dpath, immutable=True)
        if default.model_id is not None and default.model_id != encoder.model_id:
            # the bundled store only serves the bundled model: skip it for any other model
            log.warning("bundled default store skipped: it holds embeddings of %s, not %s", default.model_id,
                        encoder.model_id)  # fmt: skip
            default.close()
        else:
            stores.append(default)
    try:
        return StoreStack(stores, encoder)
    except StoreError:
        for s in stores:
            s.close()
        raise
