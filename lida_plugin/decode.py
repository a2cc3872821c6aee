"""Decoding: file bytes to an 8-bit RGB pixel grid, plus how far its low bits can be trusted.

Policy (``docs/input-policy.md`` says why):

* The stored pixel grid is analysed as it is: no resampling, no EXIF rotation, no colour
  management, no alpha compositing (each would rewrite the low bits).
* ``RGB``: used as is. ``RGBA``/``RGBa``: alpha dropped. ``L``/``LA``/``I;16`` grayscale: the
  gray value is copied to R, G and B (reliable, with a note). 16-bit images: the high byte is
  kept (a note). ``P`` (palette), ``1`` (bilevel), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``:
  converted to RGB but *unreliable*: the conversion, not the generator, wrote the low bits.
  ``I``/``F`` (32-bit) are refused.
* Lossy codecs (JPEG with any quantisation step above 1, lossy WebP, AVIF/HEIC, JPEG-in-TIFF)
  re-quantise the pixels, so the fingerprint is unreliable; the verdict becomes
  ``inconclusive`` unless the caller forces it.
* Refused with an :class:`InputError` naming the file: missing, a directory, unreadable,
  empty, not an image, truncated, animated, a decompression bomb, absurd dimensions.

Speed (opt-in): Pillow reads the header and decides all of the above. With ``LIDA_PNG_DECODER=libspng``
(and ``pyspng`` installed: the ``png`` extra) the pixels of an 8-bit RGB or RGBA PNG are decoded by
libspng instead: the same pixels at about half Pillow's CPU, after the chunk CRCs are checked here. Not
the default, because pyspng does not check zlib's Adler-32: a file whose deflate stream is broken under
correct chunk CRCs decodes to wrong pixels without an error, where Pillow refuses it (a CRC-repairing
fuzz found such files in 4% of mutations, with up to half the pixels wrong; docs/input-policy.md). It
also holds the GIL, where Pillow releases it. Anything libspng refuses or that is not such a PNG goes
through Pillow, so errors and their messages are Pillow's.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import InputError

#: Largest image (in pixels) decoded by default: 8K × 8K. Beyond that it is refused as a
#: possible decompression bomb; callers may raise it.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Largest side accepted, whatever the pixel count.
MAX_SIDE = 65_535
#: Largest file read, in bytes.
MAX_FILE_BYTES = 1 << 30

ImageFile.LOAD_TRUNCATED_IMAGES = False

try:  # optional: the png extra
    import pyspng as _pyspng
except ImportError:  # pragma: no cover - depends on the installation
    _pyspng = None
PNG_DECODERS = ("pillow", "libspng")
#: decode 8-bit RGB/RGBA PNGs with libspng (see the module docstring; :func:`use_libspng` sets it)
FAST_PNG = False


def png_decoder_setting() -> str:
    """``$LIDA_PNG_DECODER``: ``pillow`` (the default) or ``libspng`` (which needs ``pyspng``);
    ``ValueError`` naming the variable otherwise."""
    v = os.environ.get("LIDA_PNG_DECODER", "").strip().lower() or "pillow"
    if v not in PNG_DECODERS:
        raise ValueError(f"LIDA_PNG_DECODER={v!r}: use one of {', '.join(PNG_DECODERS)}")
    if v == "libspng" and _pyspng is None:
        raise ValueError("LIDA_PNG_DECODER=libspng needs pyspng: pip install 'lida-plugin[png]'")
    return v


def use_libspng() -> bool:
    """Set this process' PNG decoder from ``$LIDA_PNG_DECODER``; whether libspng is now used."""
    global FAST_PNG
    FAST_PNG = png_decoder_setting() == "libspng"
    return FAST_PNG


try:
    use_libspng()
except ValueError:  # reported where a command starts (lida_plugin.cli); Pillow until then
    FAST_PNG = False

_UNRELIABLE_MODES = {
    "P": "palette image: colours were quantised to a palette, the low bits are not the generator's",
    "PA": "palette image: colours were quantised to a palette, the low bits are not the generator's",
    "1": "bilevel (1-bit) image: no low bits to read",
    "CMYK": "CMYK image: converting to RGB rewrites the low bits",
    "YCbCr": "YCbCr image: converting to RGB rewrites the low bits",
    "LAB": "Lab image: converting to RGB rewrites the low bits",
    "HSV": "HSV image: converting to RGB rewrites the low bits",
}


@dataclass
class Decoded:
    """A decoded image: ``pixels`` is ``H×W×3`` ``uint8`` RGB, the stored grid unchanged."""

    path: str
    pixels: np.ndarray
    format: str
    mode: str
    sha256: str
    reliable: bool = True
    reasons: list[str] = field(default_factory=list)  # why the fingerprint is unreliable
    notes: list[str] = field(default_factory=list)  # conversions that keep the low bits
    jpeg_quality: int | None = None
    jpeg_history: bool = False  # lossless pixels that were a JPEG (lida_plugin.jpeghist; set by the attributor)
    # why a ``real`` reading of these pixels is not evidence, though an ``ai-generated`` one is (added noise:
    # lida_plugin.noisegate; set by the attributor)
    masked: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a file for analysis, turning every OS failure into an :class:`InputError`."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except OSError as exc:
        raise InputError(p, f"cannot stat: {exc.strerror or exc}") from None
    _regular(p, st)
    try:
        # O_NONBLOCK: if the name became a FIFO since the stat, opening it must not wait for a writer
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc.strerror or exc}") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        _regular(p, st)  # what was opened, not what the name pointed to a moment ago
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except PermissionError:
            raise InputError(p, "permission denied") from None
        except OSError as exc:
            raise InputError(p, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(p, f"file grew past the {MAX_FILE_BYTES} byte limit while being read")
    return data


_SPECIAL = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}  # fmt: skip


def _regular(p: Path, st: os.stat_result) -> None:
    """Refuse anything but a regular file of a sane size, before reading it."""
    if stat.S_ISDIR(st.st_mode):
        raise InputError(p, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(p, f"not a regular file ({_SPECIAL.get(stat.S_IFMT(st.st_mode), 'special file')})")
    if st.st_size == 0:
        raise InputError(p, "empty file (0 bytes)")
    if st.st_size > MAX_FILE_BYTES:
        raise InputError(p, f"file is {st.st_size} bytes, larger than the {MAX_FILE_BYTES} byte limit")


def decode_file(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Read and decode ``path``; see the module docstring for the policy."""
    data = read_bytes(path)
    return decode_bytes(data, str(path), max_pixels=max_pixels)


def decode_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode image bytes; ``name`` is used in errors and in the result."""
    if not data:
        raise InputError(name, "empty file (0 bytes)")
    sha = hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InputError(name, "not an image Pillow can read") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(name, f"refused as a possible decompression bomb: {exc}") from None
        except Exception as exc:  # Pillow raises many types on malformed headers
            raise InputError(name, f"cannot open image: {exc}") from None
        with im:
            fmt = im.format or "unknown"
            w, h = im.size
            if w <= 0 or h <= 0 or w > MAX_SIDE or h > MAX_SIDE:
                raise InputError(name, f"absurd dimensions {w}x{h}")
            if w * h > max_pixels:
                raise InputError(
                    name, f"{w}x{h} = {w * h} pixels exceeds the {max_pixels} pixel limit (possible decompression bomb)"
                )
            try:  # counting frames seeks through the file: malformed frame headers raise here (fuzzing)
                frames = getattr(im, "n_frames", 1)
            except Exception as exc:
                raise InputError(name, f"malformed image structure: {type(exc).__name__}: {exc}") from None
            if frames > 1 and im.format != "MPO":
                raise InputError(name, f"animated image ({frames} frames): only still images are analysed")
            fast = _fast_png(data, fmt, im.mode, (w, h))
            try:
                reasons, notes, quality = _codec_reliability(im, fmt, data)
                if fast is None:
                    im.load()
            except Exception as exc:  # truncated / corrupt data
                raise InputError(name, f"corrupt or truncated image data: {exc}") from None
            try:
                pixels, mode_reasons, mode_notes = _to_rgb(im, name, data) if fast is None else _fast_rgb(im, fast)
            except InputError:
                raise
            except Exception as exc:  # a conversion of corrupt data (fuzzing)
                raise InputError(name, f"corrupt image data: {type(exc).__name__}: {exc}") from None
    reasons += mode_reasons
    notes += mode_notes
    if frames > 1:  # only MPO gets here: a camera JPEG with preview images appended (CIPA DC-007)
        notes.append(f"MPO: the primary image is analysed, its {frames - 1} preview image(s) are not")
    return Decoded(
        path=name,
        pixels=pixels,
        format=fmt,
        mode=im.mode,
        sha256=sha,
        reliable=not reasons,
        reasons=reasons,
        notes=notes,
        jpeg_quality=quality,
    )


def _fast_png(data: bytes, fmt: str, mode: str, size: tuple[int, int]) -> np.ndarray | None:
    """The pixels of an 8-bit RGB/RGBA PNG decoded by libspng, ``[H, W, 3]`` (alpha dropped, as
    :func:`_to_rgb` does); ``None`` when that does not apply or libspng refuses the data (then Pillow
    decodes it, and reports what is wrong)."""
    if not FAST_PNG or fmt != "PNG" or mode not in ("RGB", "RGBA") or _png_bit_depth(data) != 8:
        return None
    if not _png_chunks_intact(data):  # pyspng does not check CRCs: a damaged file must not decode quietly
        return None
    try:
        px = _pyspng.load(data)
    except Exception:  # libspng is stricter or differently worded: Pillow decides
        return None
    w, h = size
    if px.dtype != np.uint8 or px.ndim != 3 or px.shape[:2] != (h, w) or px.shape[2] not in (3, 4):
        return None
    return px


def _png_chunks_intact(data: bytes) -> bool:
    """Every chunk's CRC-32 up to ``IEND`` is right, and ``IEND`` is there (0.08 ms a file over 200 of the
    corpus' 512x512 PNGs, 171 KB on average).

    libspng as pyspng builds it checks neither the chunk CRCs nor zlib's Adler-32 (a bit flipped inside
    the image data decodes to a wrong pixel without an error, where Pillow refuses the file), so the
    chunks are checked here; a file that fails goes to Pillow. What the CRCs cannot catch, a writer that
    stored a bad deflate stream under correct CRCs, libspng may still decode where Pillow would refuse."""
    view = memoryview(data)
    pos, end = 8, len(data)
    while pos + 12 <= end:
        length = int.from_bytes(view[pos : pos + 4], "big")
        stop = pos + 8 + length
        if stop + 4 > end or zlib.crc32(view[pos + 4 : stop]) != int.from_bytes(view[stop : stop + 4], "big"):
            return False
        if view[pos + 4 : pos + 8] == b"IEND":
            return True
        pos = stop + 4
    return False


def _fast_rgb(im: Image.Image, px: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    notes = [f"{im.mode}: alpha channel ignored (pixels not composited)"] if im.mode == "RGBA" else []
    return np.ascontiguousarray(px[..., :3]), [], notes


def _png_bit_depth(data: bytes) -> int | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[12:16] == b"IHDR":
        return data[24]
    return None


def _to_rgb(im: Image.Image, name: str, data: bytes) -> tuple[np.ndarray, list[str], list[str]]:
    mode = im.mode
    reasons: list[str] = []
    notes: list[str] = []
    if mode == "RGB":
        if _png_bit_depth(data) == 16:
            notes.append("16-bit PNG: Pillow keeps the high byte of each sample")
        arr = np.asarray(im, dtype=np.uint8)
    elif mode in ("RGBA", "RGBa", "RGBX"):
        notes.append(f"{mode}: alpha channel ignored (pixels not composited)")
        arr = np.asarray(im, dtype=np.uint8)[..., :3]
    elif mode in ("L", "LA"):
        notes.append("grayscale: the gray value is used for R, G and B")
        g = np.asarray(im.getchannel(0), dtype=np.uint8)
        arr = np.repeat(g[..., None], 3, axis=2)
    elif mode.startswith("I;16"):
        notes.append("16-bit grayscale: high byte kept, used for R, G and B")
        g16 = np.asarray(im).astype(np.uint16)
        g = (g16 >> 8).astype(np.uint8)
        arr = np.repeat(g[..., None], 3, axis=2)
    elif mode in _UNRELIABLE_MODES:
        reasons.append(_UNRELIABLE_MODES[mode])
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    else:
        raise InputError(name, f"unsupported pixel mode {mode!r}")
    return np.ascontiguousarray(arr), reasons, notes


def _jpeg_quality(qtables: dict[int, list[int]]) -> int | None:
    """Estimate the IJG quality from the luminance table (inverse of libjpeg's scaling)."""
    base = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
            14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
            92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip
    if 0 not in qtables:
        return None
    table = list(qtables[0])
    if len(table) != 64:
        return None
    # Pillow returns the table in zig-zag order for some versions and natural order for
    # others; the ratio of sums does not care.
    scale = 100.0 * sum(table) / sum(base)
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return int(round(min(100.0, max(1.0, quality))))


def _codec_reliability(im: Image.Image, fmt: str, data: bytes) -> tuple[list[str], list[str], int | None]:
    reasons: list[str] = []
    notes: list[str] = []
    quality = None
    if fmt in ("JPEG", "MPO"):
        qt = getattr(im, "quantization", None) or {}
        quality = _jpeg_quality(qt)
        if any(v > 1 for table in qt.values() for v in table) or not qt:
            reasons.append(
                f"lossy JPEG (estimated quality {quality if quality is not None else 'unknown'}):"
                " compression rewrote the low bits"
            )
        else:
            reasons.append("JPEG (quality 100): colour conversion and rounding rewrote the low bits")
    elif fmt == "WEBP":
        if b"VP8L" not in data[12:40]:
            reasons.append("lossy WebP: compression rewrote the low bits")
    elif fmt in ("AVIF", "HEIF", "HEIC", "JPEG2000", "JXL"):
        reasons.append(f"{fmt} is usually lossy: the low bits cannot be trusted")
    elif fmt == "TIFF":
        comp = str(im.info.get("compression", "raw"))
        if "jpeg" in comp.lower():
            reasons.append(f"TIFF with {comp} compression: the low bits cannot be trusted")
    return reasons, notes, quality
