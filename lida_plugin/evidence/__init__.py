"""Evidence beyond the fingerprint: what a file declares about itself, read without network or model.

:func:`read_evidence` returns a list of evidence items (``schemas/evidence-item.schema.json``) from the
file's C2PA manifest (:mod:`.c2pa`), XMP (:mod:`.xmp`), EXIF (:mod:`.exif`), PNG text chunks of
generator front ends (:mod:`.pngtext`) and JPEG comments (:mod:`.comment`); :func:`.combine.apply_evidence`
combines them with the pixel fingerprint into the record's verdict (the rule: docs/provenance.md).

Every reader is bounded and never raises on hostile input: malformed metadata gives no item or an
``unknown`` one. A malformed *user* model-names file is a setup error (:class:`.names.ModelNamesError`),
found by :func:`check_setup` before any file is read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..provenance import mime_for
from . import c2pa as c2pa_reader
from . import comment, containers, exif, pngtext, xmp
from .combine import apply_evidence, combine
from .items import make_item
from .names import ModelNamesError, load_names

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 30
MAX_SIDECAR_BYTES = 64 << 20

__all__ = ["read_evidence", "read_evidence_bytes", "apply_evidence", "combine", "check_setup", "ModelNamesError"]


def check_setup() -> None:
    """Load the model-names table now: raises :class:`ModelNamesError` for a malformed user file."""
    load_names()


def _guard(source: str, fn, *args, **kw) -> list[dict[str, Any]]:
    try:
        return fn(*args, **kw)
    except ModelNamesError:
        raise
    except Exception as exc:  # a reader bug on one odd file: reported as unknown evidence, never a traceback
        log.debug("%s reader failed", source, exc_info=True)
        return [make_item(source, "unknown", field=f"{source} reader", value=f"unreadable: {type(exc).__name__}")]


def read_evidence_bytes(
    data: bytes, *, mime: str | None = None, sidecar: bytes | None = None, names=None, c2pa_context=None
) -> list[dict[str, Any]]:
    """Evidence items from a file's bytes (``sidecar``: the bytes of its ``.c2pa`` manifest store, if any)."""
    names = names or load_names()
    meta = containers.parse(data)
    mime = mime or mime_for("", meta.format)
    out: list[dict[str, Any]] = []
    if meta.has_c2pa or sidecar is not None:
        out += _guard(
            "c2pa",
            c2pa_reader.read,
            data,
            mime,
            sidecar=sidecar if not meta.has_c2pa else None,
            names=names,
            context=c2pa_context,
        )
    out += _guard("xmp", xmp.read, meta.xmp, names)
    out += _guard("exif", exif.read, meta.exif, names)
    if meta.texts:
        out += _guard("png-text", pngtext.read, meta.texts, names)
    if meta.comments:
        out += _guard("jpeg-comment", comment.read, meta.comments, names)
    return out


def read_evidence(path: str | os.PathLike[str], decoded=None, *, data: bytes | None = None) -> list[dict[str, Any]]:
    """Evidence items for the file at ``path`` (its ``<stem>.c2pa`` sidecar included).

    ``decoded`` (a :class:`lida_plugin.decode.Decoded`) is the analysis of the same file: when the bytes on
    disk no longer hash to it, nothing is read (the metadata would describe other pixels). ``data``: the
    bytes the caller decoded, when it has them (not hashed again). Never raises for a bad file (an
    unreadable one gives ``[]``).
    """
    p = Path(path)
    read_here = data is None
    try:
        if read_here:
            if p.stat().st_size > MAX_FILE_BYTES:
                return []
            data = p.read_bytes()
    except OSError as exc:
        log.debug("%s: metadata not read: %s", p, exc)
        return []
    if read_here and decoded is not None and getattr(decoded, "sha256", None):  # still what was decoded?
        import hashlib

        if hashlib.sha256(data).hexdigest() != decoded.sha256:
            log.warning("%s: changed since it was decoded; its metadata is not read", p)
            return []
    sidecar = None
    side = p.with_suffix(".c2pa")
    try:
        if side.is_file() and side.stat().st_size <= MAX_SIDECAR_BYTES:
            sidecar = side.read_bytes()
    except OSError:
        sidecar = None
    return read_evidence_bytes(data, mime=mime_for(p, getattr(decoded, "format", None)), sidecar=sidecar)
