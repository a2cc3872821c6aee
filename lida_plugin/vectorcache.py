"""A store's embeddings and approximate index as one memory-mapped file beside it (a derived cache).

Opening a store of 10⁶ exemplars from SQLite reads 512 MB of embedding blocks and a 140 MB index
(seconds). ``lida store index`` (and every ``register``/``import``/``remove``/``reembed`` through
the command line, which update the index) also writes ``<store>.lida-vectors``: the blocks' ids,
generator ids, source names and embeddings as plain arrays, the exemplars' content keys, and the
serialised index. Opening maps the file (``numpy.memmap``): the embeddings are read only where a
query's candidates are re-ranked, so opening does not read them.

The file is a cache, never the truth. Its header carries the stamp of the store state it was made
from (:meth:`lida_plugin.store.ExemplarStore.vector_stamp`: the store id, ``vectors_epoch``, a
``blocks_token`` that every write to the embedding blocks replaces, the block and row counts), and
the index's stamp. A reader compares it with the store inside its read transaction, checks the
file's size, a CRC of the header and of every array but the embeddings (ids, generator ids,
sources, keys, index bytes), and compares the first and last blocks' ids and embeddings with
SQLite's. Anything that does not match (stale after a write, truncated, corrupt, from another
store) and the store is read from SQLite as before, with a log message: a bad cache costs time,
never answers. Writes go to a temporary name and are renamed into place, so a reader sees the old
file or the new one; a reader that mapped the old one keeps its mapping.

Layout: ``MAGIC``, header length (``u64``), header CRC (``u32``), the JSON header, then each array
at a 4 KiB-aligned offset named in the header.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write_parts

log = logging.getLogger(__name__)

MAGIC = b"LIDAVEC1"
VERSION = 1
SUFFIX = ".lida-vectors"
ALIGN = 4096
_PREFIX = struct.Struct("<8sQI")
UNCHECKED = ("embeddings",)
"""Arrays whose CRC is not verified on open (reading them whole is what the cache avoids); the
first and last blocks of the embeddings are compared with the store instead."""


def sidecar_path(store: str | os.PathLike[str]) -> Path:
    store = Path(store)
    return store.with_name(store.name + SUFFIX)


@dataclass(frozen=True)
class Cached:
    """A loaded cache: read-only arrays (memory-mapped) and the stamps it was made for."""

    arrays: Mapping[str, np.ndarray]
    stamp: Mapping[str, object]
    ann: Mapping[str, object] | None  # the index's stamp, when the file holds one (array "index")


def write(path: Path, stamp: Mapping[str, object], arrays: Mapping[str, np.ndarray], ann=None) -> int:
    """Write the cache for ``stamp`` atomically; returns its size in bytes."""
    specs, parts, offset = {}, [], 0
    body = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    for name, arr in body.items():
        specs[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes,
                       "crc": None if name in UNCHECKED else zlib.crc32(arr.view(np.uint8).reshape(-1))}  # fmt: skip
        offset += -(-arr.nbytes // ALIGN) * ALIGN
    header = json.dumps({"version": VERSION, "stamp": dict(stamp), "ann": None if ann is None else dict(ann),
                         "arrays": specs}, sort_keys=True).encode()  # fmt: skip
    start = -(-(_PREFIX.size + len(header)) // ALIGN) * ALIGN
    size = start + offset
    head = _PREFIX.pack(MAGIC, len(header), zlib.crc32(header)) + header
    parts.append(head + b"\0" * (start - len(head)))
    for arr in body.values():
        parts.append(arr.view(np.uint8).reshape(-1))
        pad = -(-arr.nbytes // ALIGN) * ALIGN - arr.nbytes
        parts.append(b"\0" * pad)
    atomic_write_parts(path, parts)
    return size


def read_header(path: Path) -> tuple[dict, int] | None:
    """``(header, data start)``, or None when the file is missing or not a valid cache file."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                return None
            magic, n, crc = _PREFIX.unpack(prefix)
            if magic != MAGIC or n > 1 << 24:
                return None
            raw = f.read(n)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(raw) != n or zlib.crc32(raw) != crc:
        return None
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    start = -(-(_PREFIX.size + n) // ALIGN) * ALIGN
    specs = header.get("arrays") or {}
    end = max((s["offset"] + s["nbytes"] for s in specs.values()), default=0)
    if header.get("version") != VERSION or size < start + end:
        return None
    return header, start


def load(path: Path, stamp: Mapping[str, object]) -> Cached | None:
    """The cache at ``path`` if it was made for ``stamp`` and is intact, else None (logged)."""
    if not path.exists():
        return None
    got = read_header(path)
    if got is None:
        log.warning("%s is not a valid vector cache (truncated or corrupt); reading the store instead", path)
        return None
    header, start = got
    if header.get("stamp") != dict(stamp):
        log.info("%s is stale (the store changed since it was written); reading the store instead", path)
        return None
    arrays = {}
    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for name, s in header["arrays"].items():
            dtype, shape = np.dtype(s["dtype"]), tuple(s["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            if count * dtype.itemsize != s["nbytes"]:
                raise ValueError(f"array {name!r}: shape and size disagree")
            arr = np.frombuffer(mm, dtype, count, start + s["offset"]).reshape(shape)
            if s["crc"] is not None and zlib.crc32(arr.view(np.uint8).reshape(-1)) != s["crc"]:
                raise ValueError(f"array {name!r} fails its CRC")
            arrays[name] = arr
    except (ValueError, TypeError, KeyError, OSError) as exc:
        log.warning("%s is corrupt (%s); reading the store instead", path, exc)
        return None
    return Cached(arrays, header["stamp"], header.get("ann"))


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
