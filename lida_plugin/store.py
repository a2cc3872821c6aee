"""The registration database: generators and their exemplars, in SQLite.

One file per store. Tables:

* ``meta``: ``schema_version``, ``store_id`` (random, fixed at creation), ``model_id`` and the
  crop geometry of the model whose embeddings it holds.
* ``generators``: ``name`` (primary key), ``family``, ``notes``, ``added``.
* ``exemplars``: ``sha256`` of the file's bytes (unique: registering the same image twice is a
  no-op), ``generator``, ``source`` (file name), image size, ``model_id``, the ``embedding``
  (float32 blob) and the exemplar's low-bit crops (``x & 7`` of the model's crop grid,
  zlib-compressed) so that :meth:`ExemplarStore.reembed` can re-embed the store with a new model
  without the original images.

Writes are transactions; the file is in WAL mode so readers never block a writer. A store
made by another model is refused with a message naming ``lida store reembed``.

Layering: :class:`StoreStack` searches a user store over the read-only bundled default store.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .decode import Decoded
from .errors import StoreError
from .fingerprint import lowbits

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generators (
    name TEXT PRIMARY KEY,
    family TEXT,
    notes TEXT,
    added TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exemplars (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    generator TEXT NOT NULL REFERENCES generators(name) ON DELETE CASCADE,
    source TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    crops BLOB NOT NULL,
    crop_count INTEGER NOT NULL,
    crop_size INTEGER NOT NULL,
    added TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exemplars_generator ON exemplars(generator);
"""


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


@dataclass(frozen=True)
class Generator:
    name: str
    family: str | None
    notes: str | None
    exemplars: int
    store: str


@dataclass(frozen=True)
class Exemplars:
    """A store's exemplars in memory, ready for search."""

    embeddings: np.ndarray  # float32 [N, D], unit rows
    generators: list[str]
    families: list[str | None]
    sources: list[str]
    store_ids: list[str]

    def __len__(self) -> int:
        return len(self.generators)

    @staticmethod
    def concat(parts: Iterable[Exemplars], dim: int) -> Exemplars:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Exemplars(np.zeros((0, dim), np.float32), [], [], [], [])
        return Exemplars(
            np.concatenate([p.embeddings for p in parts]),
            [g for p in parts for g in p.generators],
            [f for p in parts for f in p.families],
            [s for p in parts for s in p.sources],
            [s for p in parts for s in p.store_ids],
        )


class ExemplarStore:
    """One SQLite store file. Use as a context manager or call :meth:`close`."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, create: bool = False, immutable: bool = False
    ) -> None:
        """Open (or with ``create``, make) a store. ``immutable`` (read-only files in a read-only
        place, such as the bundled default in site-packages) tells SQLite not to look for
        journal or WAL files at all."""
        readonly = readonly or immutable
        self.path = Path(path)
        self.readonly = readonly
        if not self.path.exists():
            if not create or readonly:
                raise StoreError(f"store {self.path} does not exist")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store folder {self.path.parent}: {exc.strerror or exc}") from None
        try:
            if readonly:
                flags = "mode=ro&immutable=1" if immutable else "mode=ro"
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{flags}", uri=True, timeout=30)
            else:
                self.conn = sqlite3.connect(self.path, timeout=30)
                self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                with self.conn:
                    self.conn.executescript(_SCHEMA)
                    self.conn.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('store_id', ?), ('created', ?)",
                        (SCHEMA_VERSION, uuid.uuid4().hex[:16], _now()),
                    )
            self.meta = dict(self.conn.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store {self.path} is not a readable lida store: {exc}") from None
        if self.meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path}: schema version {self.meta.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )

    def __enter__(self) -> ExemplarStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # -- identity -------------------------------------------------------------------------
    @property
    def store_id(self) -> str:
        return self.meta["store_id"]

    @property
    def model_id(self) -> str | None:
        return self.meta.get("model_id")

    def check_model(self, encoder) -> None:
        """Refuse to mix embeddings from two models."""
        if self.model_id is not None and self.model_id != encoder.model_id:
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
                    "input_resize": str(i.input_resize)}  # fmt: skip
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

    # -- writing --------------------------------------------------------------------------
    def add_generator(self, name: str, family: str | None = None, notes: str | None = None) -> None:
        self._writable()
        name = name.strip()
        if not name:
            raise StoreError("a generator needs a non-empty name")
        with self.conn:
            self.conn.execute(
                "INSERT INTO generators VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " family=COALESCE(excluded.family, family), notes=COALESCE(excluded.notes, notes)",
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
                "INSERT INTO generators VALUES (?, ?, NULL, ?) ON CONFLICT(name) DO UPDATE SET"
                " family=COALESCE(excluded.family, family)",
                (generator, family, _now()),
            )
            cur = self.conn.execute(
                "INSERT INTO exemplars (sha256, generator, source, width, height, model_id, embedding, crops,"
                " crop_count, crop_size, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(sha256) DO NOTHING",
                (
                    decoded.sha256, generator, Path(decoded.path).name, decoded.width, decoded.height,
                    encoder.model_id, np.asarray(embedding, np.float32).tobytes(),
                    zlib.compress(lowbits(crops).tobytes(), 6), len(crops), crops.shape[-1], _now(),
                ),
            )  # fmt: skip
        return cur.rowcount == 1

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
            n = self.conn.execute("DELETE FROM exemplars WHERE generator=?", (name,)).rowcount
            self.conn.execute("DELETE FROM generators WHERE name=?", (name,))
        return n

    def reembed(self, encoder, *, backup: bool = True, progress: bool = False) -> int:
        """Re-embed every exemplar from its stored low-bit crops with ``encoder``.

        The new model must use crops no larger than the stored ones (the top-left aligned
        ``S×S`` of each stored crop is used) and no more of them. A backup copy of the file is
        written first (``<store>.bak-<time>``). Returns the number of exemplars re-embedded.
        """
        self._writable()
        new = encoder.info
        rows = self.conn.execute("SELECT id, crops, crop_count, crop_size, source FROM exemplars").fetchall()
        if rows:
            self._same_resize(self, new.input_resize)
        for _, _, _, size, source in rows:
            if size < new.crop_size:
                raise StoreError(
                    f"store {self.path}: exemplar {source} kept {size}px crops, the new model needs"
                    f" {new.crop_size}px; register the original images again instead"
                )
        if backup and rows:
            self.backup()
        from tqdm import tqdm

        updates = []
        for eid, blob, count, size, _ in tqdm(rows, desc="re-embedding", unit="exemplar", disable=not progress):
            crops = np.frombuffer(zlib.decompress(blob), np.uint8).reshape(count, 3, size, size)
            crops = np.ascontiguousarray(crops[: new.crop_count, :, : new.crop_size, : new.crop_size])
            updates.append((encoder.embed_crop_sets([crops])[0].tobytes(), new.model_id, eid))
        with self.conn:
            self.conn.executemany("UPDATE exemplars SET embedding=?, model_id=? WHERE id=?", updates)
            self.conn.execute(
                "DELETE FROM meta WHERE key IN ('model_id', 'crop_size', 'crop_count', 'crop_align', 'embedding_dim',"
                " 'input_resize')"
            )
            self.meta.pop("model_id", None)
            self._bind_model(encoder)
        return len(updates)

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
        out = sqlite3.connect(dest)
        try:
            self.conn.backup(out)
        finally:
            out.close()
        return dest

    def import_from(self, other: ExemplarStore, encoder, generators: set[str] | None = None) -> tuple[int, int]:
        """Copy exemplars from ``other`` (re-embedding them when its model differs).

        Returns ``(added, skipped)``; images already here are skipped.
        """
        self._writable()
        self.check_model(encoder)
        added = skipped = 0
        fams = {g.name: (g.family, g.notes) for g in other.generators()}
        rows = other.conn.execute(
            "SELECT sha256, generator, source, width, height, model_id, embedding, crops, crop_count, crop_size"
            " FROM exemplars ORDER BY id"
        ).fetchall()
        with self.conn:
            self._bind_model(encoder)
            for sha, gen, source, w, h, mid, emb, blob, count, size in rows:
                if generators and gen not in generators:
                    continue
                if self.conn.execute("SELECT 1 FROM exemplars WHERE sha256=?", (sha,)).fetchone():
                    skipped += 1
                    continue
                if mid != encoder.model_id:
                    self._same_resize(other, encoder.info.input_resize)
                    if size < encoder.info.crop_size:
                        raise StoreError(
                            f"{other.path}: exemplar {source} has {size}px crops, too small for this model"
                        )
                    crops = np.frombuffer(zlib.decompress(blob), np.uint8).reshape(count, 3, size, size)
                    crops = np.ascontiguousarray(
                        crops[: encoder.info.crop_count, :, : encoder.info.crop_size, : encoder.info.crop_size]
                    )
                    emb = encoder.embed_crop_sets([crops])[0].tobytes()
                family, notes = fams.get(gen, (None, None))
                self.conn.execute(
                    "INSERT INTO generators VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
                    (gen, family, notes, _now()),
                )
                self.conn.execute(
                    "INSERT INTO exemplars (sha256, generator, source, width, height, model_id, embedding, crops,"
                    " crop_count, crop_size, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha, gen, source, w, h, encoder.model_id, emb, blob, count, size, _now()),
                )
                added += 1
        return added, skipped

    # -- reading --------------------------------------------------------------------------
    def generators(self) -> list[Generator]:
        rows = self.conn.execute(
            "SELECT g.name, g.family, g.notes, COUNT(e.id) FROM generators g"
            " LEFT JOIN exemplars e ON e.generator = g.name GROUP BY g.name ORDER BY g.name"
        )
        return [Generator(n, f, notes, c, str(self.path)) for n, f, notes, c in rows]

    def exemplar_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM exemplars").fetchone()[0]

    def exemplars(self) -> Exemplars:
        rows = self.conn.execute(
            "SELECT e.embedding, e.generator, g.family, e.source FROM exemplars e"
            " JOIN generators g ON g.name = e.generator ORDER BY e.id"
        ).fetchall()
        dim = int(self.meta.get("embedding_dim", 0))
        if not rows:
            return Exemplars(np.zeros((0, dim), np.float32), [], [], [], [])
        emb = np.stack([np.frombuffer(r[0], np.float32) for r in rows])
        return Exemplars(
            emb, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [self.store_id] * len(rows)
        )

    def info(self) -> dict:
        return {
            "path": str(self.path),
            "store_id": self.store_id,
            "model_id": self.model_id,
            "readonly": self.readonly,
            "generators": len(self.generators()),
            "exemplars": self.exemplar_count(),
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
            "meta": dict(self.meta),
        }


class StoreStack:
    """The stores searched for one run: the user store (if any) over the bundled default."""

    def __init__(self, stores: list[ExemplarStore], encoder) -> None:
        for s in stores:
            s.check_model(encoder)
        self.stores = stores
        self.exemplars = Exemplars.concat((s.exemplars() for s in stores), encoder.info.embedding_dim)

    @property
    def store_id(self) -> str:
        """Identifies the combination searched (joined store ids, user store first)."""
        return "+".join(s.store_id for s in self.stores) or "none"

    def generators(self) -> list[Generator]:
        return [g for s in self.stores for g in s.generators()]

    def close(self) -> None:
        for s in self.stores:
            s.close()


def open_stack(encoder, store: str | os.PathLike[str] | None = None, *, use_default: bool = True) -> StoreStack:
    """Open the stores for attribution: the user store if its file exists, over the default."""
    stores = []
    upath = user_store_path(store)
    if upath.exists():
        stores.append(ExemplarStore(upath))
    elif store:
        raise StoreError(f"store {upath} does not exist (register a generator into it first)")
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
