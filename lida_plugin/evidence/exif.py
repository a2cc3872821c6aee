"""EXIF: ``Make``/``Model`` (a declared camera), ``Software`` (a generator or an editor, by the name table),
``ImageDescription`` and ``UserComment`` (where AUTOMATIC1111/Forge put their ``parameters`` in JPEG/WebP files).

Parsed with Pillow's ``Image.Exif`` (header-only, bounded by the segment it is given).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from . import frontends as fe
from .items import described, generated_by, make_item, named

log = logging.getLogger(__name__)

SOFTWARE, MAKE, MODEL, DESCRIPTION, EXIF_IFD, USER_COMMENT = 0x0131, 0x010F, 0x0110, 0x010E, 0x8769, 0x9286
MAX_EXIF = 1 << 20


def _text(v: Any) -> str | None:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        return None
    v = v.replace("\x00", "").strip()
    return v or None


def user_comment(raw: Any) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix (ASCII, UNICODE = UTF-16 of either byte order, or undefined)."""
    if isinstance(raw, str):
        return _text(raw)
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        cands = [body.decode(enc, "replace") for enc in ("utf-16-be", "utf-16-le")]
        return _text(max(cands, key=lambda s: sum(ch.isascii() and ch.isprintable() for ch in s)))
    return _text(body)


def read(exif_bytes: bytes | None, names=None) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        return _read(exif_bytes, names)


def _read(exif_bytes: bytes | None, names=None) -> list[dict[str, Any]]:
    if not exif_bytes or len(exif_bytes) > MAX_EXIF:
        return []
    from PIL import Image

    try:
        warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data" and goes on: the result says enough
        ex = Image.Exif()
        ex.load(exif_bytes if exif_bytes.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif_bytes)
        ifd0 = dict(ex)
        try:
            sub = dict(ex.get_ifd(EXIF_IFD))
        except Exception:
            sub = {}
    except Exception as exc:  # Pillow raises several types on malformed TIFF structures
        log.debug("unreadable EXIF", exc_info=True)
        return [make_item("exif", "unknown", field="EXIF", value=f"unreadable EXIF: {type(exc).__name__}")]
    out: list[dict[str, Any]] = []
    comment = user_comment(sub.get(USER_COMMENT))
    if comment:
        found = fe.a1111(comment)
        if found is not None:
            out += generated_by("exif", "AUTOMATIC1111/Forge", found, field="EXIF UserComment", names=names)
    desc = _text(ifd0.get(DESCRIPTION))
    if desc:
        out += described("exif", desc, field="EXIF ImageDescription", names=names)
    software = _text(ifd0.get(SOFTWARE))
    make, model = _text(ifd0.get(MAKE)), _text(ifd0.get(MODEL))
    soft_item = named("exif", software, field="EXIF Software", value=software, names=names) if software else None
    if make or model:
        camera = " ".join(x for x in (make, model) if x)
        out.append(
            make_item("exif", "camera-capture", field="EXIF Make/Model", value=camera, name=camera, software=software)
        )
        if soft_item is not None and soft_item["claim"] != "unknown":
            out.append(soft_item)  # camera firmware strings (unknown names) stay in the camera item
    elif soft_item is not None:
        out.append(soft_item)
    return out
