"""Finding the metadata blocks in a file's bytes: JPEG segments and PNG chunks walked by hand, other formats via Pillow.

Bounded everywhere: segment and chunk counts, text sizes (compressed text is inflated only up to
:data:`MAX_TEXT`), total text. Malformed structure ends the walk with a note; it never raises.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

MAX_SEGMENTS = 4096
MAX_TEXT = 1 << 20  # one text chunk / XMP packet / comment, after inflating
MAX_TEXT_TOTAL = 4 << 20
MAX_ITEMS = 64  # text chunks, comments or XMP packets kept

PNG_SIG = b"\x89PNG\r\n\x1a\n"
XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_KEYWORD = "XML:com.adobe.xmp"


@dataclass
class Meta:
    """The metadata blocks of one file (raw; the readers interpret them)."""

    format: str
    exif: bytes | None = None
    xmp: list[bytes] = field(default_factory=list)
    comments: list[bytes] = field(default_factory=list)  # JPEG COM segments
    texts: list[tuple[str, str, str]] = field(default_factory=list)  # PNG (chunk type, keyword, text)
    has_c2pa: bool = False
    notes: list[str] = field(default_factory=list)  # malformed structure met on the way


def sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == PNG_SIG:
        return "PNG"
    return "other"


def parse(data: bytes) -> Meta:
    kind = sniff(data)
    if kind == "JPEG":
        return _jpeg(data)
    if kind == "PNG":
        return _png(data)
    return _other(data)


def _jpeg(d: bytes) -> Meta:
    m = Meta("JPEG")
    n, i, seen, total = len(d), 2, 0, 0
    while i + 4 <= n and seen < MAX_SEGMENTS:
        if d[i] != 0xFF:
            m.notes.append(f"JPEG: no marker at byte {i}")
            break
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xD9:
            break
        length = (d[i + 2] << 8) | d[i + 3]
        if length < 2 or i + 2 + length > n:
            m.notes.append(f"JPEG: segment 0x{marker:02X} at byte {i} runs past the end of the file")
            break
        seen += 1
        if marker == 0xDA:  # start of scan: the metadata segments are all before it
            break
        payload = d[i + 4 : i + 2 + length]
        if marker == 0xE1:
            if payload.startswith(b"Exif\x00\x00") and m.exif is None:
                m.exif = payload[6:]
            elif payload.startswith(XMP_APP1) and len(m.xmp) < MAX_ITEMS:
                m.xmp.append(payload[len(XMP_APP1) :])
                total += len(payload)
        elif marker == 0xEB and payload[:2] == b"JP":  # APP11 JUMBF: a C2PA manifest store
            m.has_c2pa = True
        elif marker == 0xFE and len(m.comments) < MAX_ITEMS:
            m.comments.append(payload)
            total += len(payload)
        if total > MAX_TEXT_TOTAL:
            m.notes.append("JPEG: more metadata text than the reader's limit; the rest is ignored")
            break
        i += 2 + length
    return m


def _inflate(data: bytes) -> bytes | None:
    """Inflate at most :data:`MAX_TEXT` bytes; ``None`` when corrupt or larger than that."""
    try:
        z = zlib.decompressobj()
        out = z.decompress(data, MAX_TEXT)
        if z.unconsumed_tail:
            return None
        return out
    except zlib.error:
        return None


def _png_text(ctype: bytes, body: bytes) -> tuple[str, str] | None:
    key, sep, rest = body.partition(b"\x00")
    if not sep or not key or len(key) > 79:
        return None
    keyword = key.decode("latin-1")
    if ctype == b"tEXt":
        return keyword, rest[:MAX_TEXT].decode("latin-1")
    if ctype == b"zTXt":
        raw = _inflate(rest[1:]) if rest[:1] == b"\x00" else None
        return None if raw is None else (keyword, raw.decode("latin-1"))
    # iTXt: flag, method, language\0, translated keyword\0, text (UTF-8)
    if len(rest) < 2:
        return None
    flag, method = rest[0], rest[1]
    parts = rest[2:].split(b"\x00", 2)
    if len(parts) != 3:
        return None
    text = parts[2]
    if flag:
        if method != 0:
            return None
        text = _inflate(text)
        if text is None:
            return None
    return keyword, text[:MAX_TEXT].decode("utf-8", "replace")


def _png(d: bytes) -> Meta:
    m = Meta("PNG")
    n, i, seen, total = len(d), 8, 0, 0
    while i + 12 <= n and seen < MAX_SEGMENTS * 4:
        length, ctype = struct.unpack(">I4s", d[i : i + 8])
        if i + 12 + length > n:
            m.notes.append(f"PNG: chunk {ctype!r} at byte {i} runs past the end of the file")
            break
        seen += 1
        if ctype in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"caBX"):
            body = d[i + 8 : i + 8 + length]
            crc = struct.unpack(">I", d[i + 8 + length : i + 12 + length])[0]
            if zlib.crc32(ctype + body) != crc:
                m.notes.append(f"PNG: chunk {ctype.decode('latin-1')} at byte {i} has a bad CRC; ignored")
            elif ctype == b"caBX":
                m.has_c2pa = True
            elif ctype == b"eXIf":
                m.exif = m.exif or body
            elif len(m.texts) + len(m.xmp) < MAX_ITEMS and total < MAX_TEXT_TOTAL:
                kt = _png_text(ctype, body)
                if kt is None:
                    m.notes.append(f"PNG: malformed or oversized {ctype.decode('latin-1')} chunk at byte {i}")
                elif kt[0] == XMP_KEYWORD:
                    m.xmp.append(kt[1].encode("utf-8"))
                    total += len(kt[1])
                else:
                    m.texts.append((ctype.decode("latin-1"), kt[0], kt[1]))
                    total += len(kt[1])
        elif ctype == b"IEND":
            break
        i += 12 + length
    return m


def _other(d: bytes) -> Meta:
    """WebP, TIFF, GIF, AVIF, ...: what Pillow's header parsing finds (no pixels are decoded)."""
    from PIL import Image

    m = Meta("other", has_c2pa=b"c2pa" in d)
    try:
        with Image.open(io.BytesIO(d)) as im:
            m.format = im.format or "other"
            info = im.info
            exif = info.get("exif")
            if isinstance(exif, bytes):
                m.exif = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
            elif m.format == "TIFF":
                try:
                    m.exif = im.getexif().tobytes()
                except Exception:
                    m.notes.append("TIFF: unreadable tags")
            xmp = info.get("xmp") or info.get(XMP_KEYWORD)
            if isinstance(xmp, str):
                xmp = xmp.encode("utf-8")
            if isinstance(xmp, bytes) and len(xmp) <= MAX_TEXT:
                m.xmp.append(xmp)
            comment = info.get("comment")
            if isinstance(comment, bytes) and len(comment) <= MAX_TEXT:
                m.comments.append(comment)
    except Exception as exc:  # Pillow raises many types on odd headers; the pixels were decoded elsewhere
        m.notes.append(f"metadata unreadable: {type(exc).__name__}")
    return m
