"""File helpers every front end shares: which names are images, content hashes, atomic writes.

One copy of each, so that ``lida attribute``, ``lida watch``, the manifest writer and the
training side agree (``exporters`` imports these, never the reverse).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

#: File suffixes treated as images when a folder is walked or watched (lower case).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif", ".heic", ".heif", ".jxl"}
)

#: Marks lida's own temporary files (``.lida-tmp-<name>.<id>`` and ``.<name>.lida-tmp-<hex>``): hidden
#: names, swept by the watcher at start.
TMP_PREFIX = ".lida-tmp-"


def is_image_name(name: str) -> bool:
    """Whether ``name`` has one of the :data:`IMAGE_SUFFIXES`."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one, never half:
    a hidden temporary file beside it (named by process and a random part, so two threads or two
    processes writing the same path never share it), fsync'd, then renamed over it."""
    atomic_write_parts(path, [data])


def atomic_write_parts(path: str | os.PathLike[str], parts: Iterable) -> None:
    """:func:`atomic_write` for data given as buffers written one after another (large files that
    should not be joined in memory first). The temporary name is unique across processes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
