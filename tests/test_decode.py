import io
import os

import numpy as np
import pytest
from PIL import Image

from lida_plugin.decode import decode_bytes, decode_file
from lida_plugin.errors import InputError


def _png(arr, mode=None, **kw):
    buf = io.BytesIO()
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(
        buf, format=kw.pop("format", "PNG"), **kw
    )
    return buf.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)


def test_rgb_png_pixels_are_exact_and_reliable():
    d = decode_bytes(_png(RGB), "a.png")
    assert np.array_equal(d.pixels, RGB)
    assert d.reliable and d.format == "PNG" and (d.width, d.height) == (80, 64)
    assert len(d.sha256) == 64


def test_alpha_is_dropped_not_composited():
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])
    d = decode_bytes(_png(rgba), "a.png")
    assert np.array_equal(d.pixels, RGB) and d.reliable and "alpha" in d.notes[0]


def test_grayscale_is_replicated():
    g = RGB[..., 0]
    d = decode_bytes(_png(g), "g.png")
    assert d.reliable and np.array_equal(d.pixels[..., 2], g) and np.array_equal(d.pixels[..., 0], g)


def test_sixteen_bit_grayscale_keeps_the_high_byte():
    g16 = (RGB[..., 0].astype(np.uint16) << 8) | 0x55
    buf = io.BytesIO()
    Image.fromarray(g16).save(buf, format="PNG")
    d = decode_bytes(buf.getvalue(), "g16.png")
    assert np.array_equal(d.pixels[..., 0], RGB[..., 0]) and d.reliable


@pytest.mark.parametrize("mode,word", [("P", "palette"), ("CMYK", "CMYK")])
def test_palette_and_cmyk_are_unreliable(mode, word):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    d = decode_bytes(_png(RGB, mode, format=fmt), f"x.{fmt.lower()}")
    assert not d.reliable and any(word in r for r in d.reasons)


def test_lossy_jpeg_is_unreliable_with_its_quality():
    d = decode_bytes(_png(RGB, format="JPEG", quality=80), "x.jpg")
    assert not d.reliable and d.jpeg_quality is not None and 70 <= d.jpeg_quality <= 90
    assert "lossy JPEG" in d.reasons[0]


def test_webp_lossless_is_reliable_and_lossy_is_not():
    assert decode_bytes(_png(RGB, format="WEBP", lossless=True), "x.webp").reliable
    assert not decode_bytes(_png(RGB, format="WEBP", quality=90), "x.webp").reliable


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not an image"),
        (_png(RGB)[:200], "truncated"),
    ],
)
def test_bad_bytes_give_input_errors(data, reason):
    with pytest.raises(InputError, match=reason) as exc:
        decode_bytes(data, "bad.png")
    assert exc.value.path == "bad.png"


def test_animated_gif_is_refused():
    frames = [Image.fromarray(RGB), Image.fromarray(255 - RGB)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="animated image"):
        decode_bytes(buf.getvalue(), "anim.gif")


def test_decompression_bomb_is_refused():
    buf = io.BytesIO()
    Image.new("RGB", (400, 400)).save(buf, format="PNG")
    with pytest.raises(InputError, match="pixel limit"):
        decode_bytes(buf.getvalue(), "bomb.png", max_pixels=10_000)


def test_absurd_header_dimensions_are_refused():
    data = bytearray(_png(RGB))
    data[16:24] = (70000).to_bytes(4, "big") + (70000).to_bytes(4, "big")  # IHDR width/height
    with pytest.raises(InputError):
        decode_bytes(bytes(data), "huge.png")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        decode_file(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a directory"):
        decode_file(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        decode_file(tmp_path / "empty.png")


def test_unreadable_file(tmp_path, monkeypatch):
    p = tmp_path / "locked.png"
    p.write_bytes(_png(RGB))
    p.chmod(0)
    if os.geteuid() == 0:  # root reads mode-0 files: make the read fail as it would for a user
        real = os.open

        def deny(path, *a, **kw):
            if os.fspath(path).endswith("locked.png"):
                raise PermissionError(13, "Permission denied")
            return real(path, *a, **kw)

        monkeypatch.setattr(os, "open", deny)
    with pytest.raises(InputError, match="locked.png: permission denied"):
        decode_file(p)


def test_decoding_never_modifies_the_file(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(_png(RGB))
    before = (p.read_bytes(), p.stat().st_mtime_ns)
    decode_file(p)
    assert (p.read_bytes(), p.stat().st_mtime_ns) == before


@pytest.fixture
def libspng(monkeypatch):
    """The libspng path on (as in a batch worker); skipped where pyspng is not installed."""
    pytest.importorskip("pyspng")
    import lida_plugin.decode as D

    monkeypatch.setattr(D, "FAST_PNG", True)
    return D


def _both(data: bytes, name: str, monkeypatch):
    import lida_plugin.decode as D

    out = []
    for fast in (True, False):
        monkeypatch.setattr(D, "FAST_PNG", fast)
        try:
            out.append(decode_bytes(data, name))
        except InputError as exc:
            out.append(exc.reason)
    return out


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return np.array_equal(a.pixels, b.pixels) and (a.mode, a.notes, a.reasons, a.reliable, a.sha256) == (
        b.mode, b.notes, b.reasons, b.reliable, b.sha256,
    )  # fmt: skip


def test_libspng_and_pillow_decode_the_same_pngs(libspng, monkeypatch):
    rgba = np.dstack([RGB, np.random.default_rng(1).integers(0, 256, RGB.shape[:2], dtype=np.uint8)])
    cases = {
        "rgb": _png(RGB),
        "rgba": _png(rgba),
        "rgb-trns": _png(RGB, transparency=(1, 2, 3)),
        "compressed-9": _png(RGB, compress_level=9),
        "gray": _png(RGB, mode="L"),
        "palette": _png(RGB, mode="P"),
        "16-bit gray": _png(np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 13),
    }
    for name, data in cases.items():
        fast, pillow = _both(data, f"{name}.png", monkeypatch)
        assert _same(fast, pillow), name
    libspng.FAST_PNG = True
    assert libspng._fast_png(cases["rgb"], "PNG", "RGB", (80, 64)) is not None  # taken by libspng
    assert libspng._fast_png(cases["palette"], "PNG", "P", (80, 64)) is None  # left to Pillow
    assert "alpha channel ignored" in decode_bytes(cases["rgba"], "a.png").notes[0]


def test_libspng_leaves_broken_pngs_to_pillow(libspng, monkeypatch):
    good = _png(RGB)
    idat = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[idat + 40] ^= 0xFF  # a bit error inside the compressed data
    crc = bytearray(good)
    crc[idat + 4 + int.from_bytes(good[idat - 4 : idat], "big")] ^= 0x01  # the IDAT chunk's CRC
    for name, data in {"truncated": good[: len(good) // 2], "flipped": bytes(flipped), "crc": bytes(crc)}.items():
        fast, pillow = _both(data, f"{name}.png", monkeypatch)
        assert _same(fast, pillow), name
        if name == "truncated":
            assert isinstance(fast, str) and "truncated" in fast


def test_png_decoder_setting(monkeypatch):
    import lida_plugin.decode as D

    for value, fast in (("", False), ("pillow", False), (" Pillow ", False)):
        monkeypatch.setenv("LIDA_PNG_DECODER", value)
        assert D.use_libspng() is fast
    monkeypatch.setenv("LIDA_PNG_DECODER", "spng")
    with pytest.raises(ValueError, match="LIDA_PNG_DECODER='spng': use one of pillow, libspng"):
        D.use_libspng()
    monkeypatch.setenv("LIDA_PNG_DECODER", "libspng")
    if D._pyspng is None:
        with pytest.raises(ValueError, match="needs pyspng"):
            D.use_libspng()
    else:
        assert D.use_libspng() is True
    monkeypatch.delenv("LIDA_PNG_DECODER")
    assert D.use_libspng() is False


def test_a_broken_deflate_stream_under_correct_crcs_is_refused_by_default():
    """Why libspng is opt-in: pyspng checks no Adler-32, so this file decodes there to a wrong pixel;
    the default decoder (Pillow) refuses it."""
    import zlib

    good = bytearray(_png(RGB))
    i = good.index(b"IDAT")
    n = int.from_bytes(good[i - 4 : i], "big")
    good[i + 4 + 200] ^= 0xFF  # inside the stored (incompressible) data
    good[i + 4 + n : i + 8 + n] = zlib.crc32(bytes(good[i : i + 4 + n])).to_bytes(4, "big")  # CRC made right
    with pytest.raises(InputError, match="corrupt or truncated image data"):
        decode_bytes(bytes(good), "broken.png")


def test_libspng_decodes_the_corpus_like_pillow(libspng, monkeypatch, shared_data):
    files = sorted(shared_data.rglob("*.png"))[::7]
    assert len(files) > 100
    for f in files:
        fast, pillow = _both(f.read_bytes(), str(f), monkeypatch)
        assert _same(fast, pillow), f
