"""Fuzzing the parsers that face untrusted bytes: seeds, mutators, targets and a sandboxed runner.

Used by ``tests/test_fuzz.py`` (short, deterministic hypothesis run) and ``benchmarks/fuzz_parsers.py``
(the long run). Every input must end in a record or a clean error (:class:`~lida_plugin.errors.LidaError`
subclasses, or a summary dict with a known status); anything else is a *finding*:

* ``exception``: an uncaught exception (the traceback is kept);
* ``hang``: no answer within the time budget (the worker is killed and restarted);
* ``died``: the worker process died (a native crash, or the memory limit hit in native code);
* ``memory``: ``MemoryError`` under the worker's address-space limit (``RLIMIT_AS``).

Targets:

* ``decode``: :func:`lida_plugin.decode.decode_bytes` (PNG/JPEG/WebP/TIFF/GIF/BMP headers, chunk lengths,
  ICC, EXIF, XMP blocks);
* ``decode-libspng``: the same with libspng decoding 8-bit RGB/RGBA PNGs (``LIDA_PNG_DECODER=libspng``),
  checked against Pillow's decoding of the same bytes: both refuse, or both give the same pixels (the
  mutations break chunk CRCs, which the libspng path checks first; with CRCs repaired the two differ:
  lida_plugin.decode);
* ``c2pa``: the bytes as an asset file: :func:`lida_plugin.provenance.read_store` and
  :func:`lida_plugin.verify.verify` (the C2PA read path of ``lida attribute --manifest`` and ``lida verify``);
* ``sidecar``: the bytes as a ``.c2pa`` sidecar of a fixed asset (``read_store(..., sidecar=...)``).
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import random
import resource
import struct
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(os.environ.get("LIDA_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TARGETS = ("decode", "decode-libspng", "evidence", "c2pa", "sidecar")
#: Address-space limit of a worker: far above what a legitimate small input needs.
MEMORY_LIMIT = 3 << 30
#: Seconds one input may take (a loaded 2-core machine; a normal call takes milliseconds).
TIME_BUDGET = 20.0

_MAGIC_INTS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE]


# -- seeds ------------------------------------------------------------------------------------------
def generated_seeds() -> dict[str, bytes]:
    """Small images in every format the decoder reads, with ICC, EXIF and XMP blocks where the format has them."""
    import numpy as np
    from PIL import Image, ImageCms

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "LIDA fuzz camera"  # Make
    exif[0x0131] = "fuzz-software"  # Software
    exif[0x0132] = "2024:01:01 00:00:00"  # DateTime
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:format="image/png"/></rdf:RDF></x:xmpmeta>'
    )
    out: dict[str, bytes] = {}

    def save(name: str, im: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    info.add_text("parameters", "a prompt, Steps: 20, Sampler: Euler")
    save("gen.png", rgb, "PNG", icc_profile=icc, exif=exif.tobytes(), pnginfo=info)
    save("gen-rgba.png", rgb.convert("RGBA"), "PNG")
    save("gen-16bit.png", Image.fromarray(np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80), "PNG")
    save("gen-palette.png", rgb.convert("P"), "PNG")
    save("gen.jpg", rgb, "JPEG", quality=90, icc_profile=icc, exif=exif.tobytes())
    save("gen-progressive.jpg", rgb, "JPEG", quality=100, progressive=True, subsampling=0)
    save("gen-lossless.webp", rgb, "WEBP", lossless=True, icc_profile=icc, exif=exif.tobytes(), xmp=xmp)
    save("gen-lossy.webp", rgb, "WEBP", quality=80)
    save("gen.tif", rgb, "TIFF", compression="tiff_lzw", icc_profile=icc, exif=exif.tobytes())
    save("gen-raw.tif", rgb.convert("CMYK"), "TIFF")
    save("gen.gif", rgb.convert("P"), "GIF")
    save("gen.bmp", rgb, "BMP")
    return out


def real_seeds(limit_bytes: int = 2_500_000) -> dict[str, bytes]:
    """Real files from ../shared: the C2PA conformance JPEGs and a few generated PNGs (with their
    metadata chunks); empty when ../shared is absent."""
    out: dict[str, bytes] = {}
    prov = SHARED / "provenance-samples"
    data = SHARED / "data"
    files = sorted(prov.rglob("*.jp*g")) + sorted(prov.rglob("*.png"))
    files += sorted(data.glob("generated/*/*.png"))[:: max(1, len(list(data.glob("generated/*/*.png"))) // 6)][:6]
    files += sorted(data.glob("real/**/*.png"))[:2]
    for f in files:
        if f.is_file() and f.stat().st_size <= limit_bytes:
            out[f"shared/{f.relative_to(SHARED)}"] = f.read_bytes()
    return out


def signed_seeds(workdir: Path, assets: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """``(embedded, sidecars)``: small assets signed with fresh development keys, embedded and as sidecars."""
    import c2pa

    from lida_plugin.keys import init_keys, load_signing_config, make_signer
    from lida_plugin.provenance import TRAINED, make_context

    keys = init_keys(workdir / "keys")
    signer = make_signer(load_signing_config(keys, test_sign=False))
    ctx = make_context()
    manifest = {
        "claim_generator_info": [{"name": "lida-fuzz", "version": "0"}],
        "title": "fuzz",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": TRAINED}]}}
        ],
    }
    embedded, sidecars = {}, {}
    for name, mime in (("gen.png", "image/png"), ("gen.jpg", "image/jpeg"), ("gen-lossless.webp", "image/webp")):
        for embed in (True, False):
            src, dst = io.BytesIO(assets[name]), io.BytesIO()
            with c2pa.Builder(manifest, context=ctx) as b:
                if not embed:
                    b.set_no_embed()
                mbytes = b.sign(signer, mime, src, dst)
            if embed:
                embedded[f"signed/{name}"] = dst.getvalue()
            else:
                sidecars[f"sidecar/{name}"] = mbytes
    signer.close()
    ctx.close()
    return embedded, sidecars


# -- mutators ---------------------------------------------------------------------------------------
def mutate(data: bytes, rnd: random.Random, max_ops: int = 6) -> bytes:
    """A few structure-blind edits that still hit structure: bit flips, byte sets, boundary integers in
    length fields, inserted/deleted/duplicated blocks, truncation, splices of the file into itself."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, max_ops)):
        if not b:
            b += bytes([rnd.randrange(256)])
        op = rnd.randrange(9)
        pos = _position(b, rnd)
        if op == 0:  # flip one bit
            b[pos] ^= 1 << rnd.randrange(8)
        elif op == 1:  # set a byte
            b[pos] = rnd.choice([0, 0xFF, 0x7F, 0x80, rnd.randrange(256)])
        elif op == 2:  # a boundary integer (a length, a width, an offset)
            fmt = rnd.choice([">I", "<I", ">H", "<H"])
            v = rnd.choice(_MAGIC_INTS) & (0xFFFF if fmt.endswith("H") else 0xFFFFFFFF)
            b[pos : pos + struct.calcsize(fmt)] = struct.pack(fmt, v)
        elif op == 3:  # insert random bytes
            b[pos:pos] = rnd.randbytes(rnd.choice([1, 4, 16, 256]))
        elif op == 4:  # delete a block
            del b[pos : pos + rnd.choice([1, 4, 16, 256, 4096])]
        elif op == 5:  # truncate
            del b[rnd.randrange(len(b)) :]
        elif op == 6:  # duplicate a block in place
            n = rnd.choice([4, 16, 256, 4096])
            b[pos:pos] = b[pos : pos + n]
        elif op == 7:  # copy a block elsewhere (e.g. a header into a chunk)
            src = rnd.randrange(len(b))
            n = rnd.choice([8, 64, 512])
            b[pos : pos + n] = b[src : src + n]
        else:  # small arithmetic on a byte (counts, versions)
            b[pos] = (b[pos] + rnd.choice([-2, -1, 1, 2])) & 0xFF
    return bytes(b)


def _position(b: bytearray, rnd: random.Random) -> int:
    """Mostly near the start (headers, the first chunks, metadata blocks), sometimes anywhere."""
    n = len(b)
    if rnd.random() < 0.7:
        return rnd.randrange(min(n, 4096))
    return rnd.randrange(n)


# -- targets (run in the worker) ------------------------------------------------------------------------
_KNOWN_STATUS = {"none", "present", "corrupt", "unreadable"}
_MIME = {b"\x89PNG": ("image/png", ".png"), b"\xff\xd8\xff": ("image/jpeg", ".jpg"), b"RIFF": ("image/webp", ".webp")}


def _mime_of(data: bytes) -> tuple[str, str]:
    for magic, m in _MIME.items():
        if data.startswith(magic):
            return m
    return "image/jpeg", ".jpg"


class _Worker:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lida-fuzz-"))
        self.asset: Path | None = None

    def run(self, target: str, data: bytes, extra: bytes | None) -> str:
        from lida_plugin.errors import LidaError

        if target == "decode":
            from lida_plugin.decode import decode_bytes

            try:
                d = decode_bytes(data, "fuzz-input")
            except LidaError as exc:
                return f"error: {type(exc).__name__}"
            assert d.pixels.ndim == 3 and d.pixels.shape[2] == 3 and d.pixels.dtype.name == "uint8"
            return "record"
        if target == "decode-libspng":
            import lida_plugin.decode as D

            outs = []
            for fast in (True, False):
                D.FAST_PNG = fast
                try:
                    outs.append(D.decode_bytes(data, "fuzz-input").pixels)
                except LidaError as exc:
                    outs.append(f"error: {type(exc).__name__}: {exc}")
            D.FAST_PNG = False
            if isinstance(outs[0], str) or isinstance(outs[1], str):
                assert outs[0] == outs[1], f"libspng: {str(outs[0])[:200]}; Pillow: {str(outs[1])[:200]}"
                return outs[0].split(":")[0] + ": " + outs[0].split(":")[1].strip()
            assert outs[0].shape == outs[1].shape and (outs[0] == outs[1]).all(), "libspng and Pillow pixels differ"
            return "record"
        if target == "evidence":  # the declared-provenance readers (C2PA, XMP, EXIF, PNG text, JPEG COM)
            from lida_plugin.evidence import read_evidence_bytes

            items = read_evidence_bytes(data)  # never raises for hostile bytes
            assert isinstance(items, list) and all(isinstance(i, dict) and i.get("source") for i in items), items
            return f"record: {len(items)} item(s)"
        if target == "c2pa":
            from lida_plugin.provenance import read_store
            from lida_plugin.verify import verify

            mime, ext = _mime_of(data)
            p = self.dir / f"asset{ext}"
            p.write_bytes(data)
            summary, _ = read_store(p, mime=mime)
            assert summary["status"] in _KNOWN_STATUS, summary
            try:
                report = verify(p)
            except LidaError as exc:
                return f"error: {type(exc).__name__}"
            assert isinstance(report, dict) and "state" in report, report
            return f"record: {summary['status']}"
        if target == "sidecar":
            from lida_plugin.provenance import read_store

            assert extra is not None
            mime, ext = _mime_of(extra)
            if self.asset is None or self.asset.read_bytes() != extra:
                self.asset = self.dir / f"sidecar-asset{ext}"
                self.asset.write_bytes(extra)
            summary, _ = read_store(self.asset, sidecar=data, mime=mime)
            assert summary["status"] in _KNOWN_STATUS, summary
            return f"record: {summary['status']}"
        if target == "_hang":  # the harness's own test: a call that never returns
            import time

            time.sleep(3600)
        if target == "_alloc":  # ... and one that allocates past the memory limit
            return str(len(bytearray(int(extra or b"0"))))
        raise ValueError(target)


def _worker_main(conn, memory_limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    w = _Worker()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        target, data, extra = msg
        try:
            conn.send(("clean", w.run(target, data, extra)))
        except MemoryError:
            conn.send(("memory", "MemoryError"))
        except BaseException:  # noqa: BLE001 - every escape is a finding
            conn.send(("exception", traceback.format_exc(limit=8)))


@dataclass
class Outcome:
    kind: str  # clean | exception | hang | died | memory
    detail: str


class Sandbox:
    """A worker process that runs targets under a memory limit; each call has a time budget."""

    def __init__(self, memory_limit: int = MEMORY_LIMIT, budget: float = TIME_BUDGET) -> None:
        self.memory_limit, self.budget = memory_limit, budget
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.calls = 0
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker_main, args=(child, self.memory_limit), daemon=True)
        self.proc.start()
        child.close()

    def _restart(self) -> None:
        self.restarts += 1
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()
        self._start()

    def call(self, target: str, data: bytes, extra: bytes | None = None) -> Outcome:
        self.calls += 1
        try:
            self.conn.send((target, data, extra))
            if not self.conn.poll(self.budget):
                self._restart()
                return Outcome("hang", f"no answer within {self.budget} s")
            kind, detail = self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.proc.join(5)
            code = self.proc.exitcode
            self._restart()
            return Outcome("died", f"worker exit code {code}")
        if kind == "memory":  # the heap may be in any state now: start afresh
            self._restart()
        return Outcome(kind, detail)

    def close(self) -> None:
        self.conn.close()
        self.proc.kill()
        self.proc.join()
