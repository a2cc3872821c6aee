"""Small files carrying generator / camera metadata, made in the tests (nothing copied from ../shared)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

A1111_PARAMS = (
    "a lighthouse at dusk, oil painting\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 42, Size: 64x64, Model hash: 31e35c80fc,"
    " Model: sd_xl_base_1.0, Version: v1.10.1"
)
COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "model": ["4", 0], "sampler_name": "euler"}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-schnell-fp8.safetensors"}},
    "8": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["3", 0]}},
}
COMFY_WORKFLOW = {
    "nodes": [{"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["flux1-schnell-fp8.safetensors"]}]
}
XMP_AI = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
 xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="{tool}">
<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/{dst}</Iptc4xmpExt:DigitalSourceType>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""
XMP_BOMB = """<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="&lol3;"/></rdf:RDF></x:xmpmeta>"""


def pixels(seed: int = 0, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def png_with_text(path: Path, texts: dict[str, str], *, ztxt: bool = False) -> Path:
    info = PngImagePlugin.PngInfo()
    for k, v in texts.items():
        info.add_text(k, v, zip=ztxt)
    pixels().save(path, "PNG", pnginfo=info)
    return path


def a1111_png(path: Path, params: str = A1111_PARAMS) -> Path:
    return png_with_text(path, {"parameters": params})


def comfy_png(path: Path, prompt=COMFY_PROMPT, workflow=COMFY_WORKFLOW) -> Path:
    texts = {}
    if prompt is not None:
        texts["prompt"] = prompt if isinstance(prompt, str) else json.dumps(prompt)
    if workflow is not None:
        texts["workflow"] = workflow if isinstance(workflow, str) else json.dumps(workflow)
    return png_with_text(path, texts)


def xmp_jpeg(
    path: Path, dst: str = "trainedAlgorithmicMedia", tool: str = "Midjourney", xmp: str | None = None
) -> Path:
    packet = (xmp if xmp is not None else XMP_AI.format(dst=dst, tool=tool)).encode("utf-8")
    pixels().save(path, "JPEG", quality=90, xmp=packet)
    return path


def camera_jpeg(path: Path, make: str = "Canon", model: str = "Canon EOS R5", software: str = "Firmware 1.8.1") -> Path:
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x0131] = make, model, software
    pixels().save(path, "JPEG", quality=90, exif=ex.tobytes())
    return path


def png_chunk(ctype: bytes, body: bytes, crc: int | None = None) -> bytes:
    c = zlib.crc32(ctype + body) if crc is None else crc
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", c)


def insert_png_chunks(data: bytes, *chunks: bytes) -> bytes:
    """``data`` (a PNG) with ``chunks`` inserted right after IHDR."""
    end = 8 + 8 + 13 + 4
    return data[:end] + b"".join(chunks) + data[end:]


def jpeg_with_segment(marker: int, payload: bytes, *, length: int | None = None, seed: int = 0) -> bytes:
    """A small JPEG with one extra segment right after SOI (``length`` overrides the declared length)."""
    b = io.BytesIO()
    pixels(seed).save(b, "JPEG", quality=90)
    data = b.getvalue()
    n = len(payload) + 2 if length is None else length
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", n & 0xFFFF) + payload + data[2:]
