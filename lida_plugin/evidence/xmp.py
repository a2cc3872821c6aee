"""XMP: IPTC ``Iptc4xmpExt:DigitalSourceType`` and ``AISystemUsed``, the tool fields (``xmp:CreatorTool``,
``tiff:Software``, ``photoshop:Credit``), ``tiff:Make``/``Model``, and the descriptions generator
front ends and hosted services fill (Draw Things' ``exif:UserComment`` JSON, Midjourney's job id,
A1111 parameters in ``dc:description``).

Parsed with :mod:`xml.etree.ElementTree` after refusing what XMP never needs: packets larger than
:data:`MAX_XMP` and any DTD or entity declaration (no entity expansion can happen). Pillow's own
``getxmp()`` is not used: it needs ``defusedxml``, which is not a dependency.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from . import frontends as fe
from .items import described, generated_by, make_item, named, source_type_claim

MAX_XMP = 1 << 20
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

NS = {
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
}
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
WANTED = {
    f"{{{NS[p]}}}{n}": f"{p}:{n}"
    for p, n in [
        ("Iptc4xmpExt", "DigitalSourceType"),
        ("Iptc4xmpExt", "AISystemUsed"),
        ("xmp", "CreatorTool"),
        ("tiff", "Software"),
        ("tiff", "Make"),
        ("tiff", "Model"),
        ("photoshop", "Credit"),
        ("exif", "UserComment"),
        ("dc", "description"),
    ]
}


def _value(el: ET.Element) -> str | None:
    """Text of a property: simple text, ``rdf:resource``, or the first ``rdf:li`` of an Alt/Seq/Bag."""
    res = el.get(f"{{{RDF}}}resource")
    if res:
        return res
    if el.text and el.text.strip():
        return el.text.strip()
    for li in el.iter(f"{{{RDF}}}li"):
        if li.text and li.text.strip():
            return li.text.strip()
    return None


def fields(packet: bytes) -> dict[str, str] | None:
    """The wanted properties of one XMP packet; ``None`` when it is malformed or refused."""
    if len(packet) > MAX_XMP or _DTD.search(packet):
        return None
    start = packet.find(b"<x:xmpmeta")
    if start < 0:
        start = packet.find(b"<rdf:RDF")
    end_tag = b"</x:xmpmeta>" if packet[start : start + 10] == b"<x:xmpmeta" else b"</rdf:RDF>"
    end = packet.rfind(end_tag)
    if start < 0 or end < 0:
        return None
    try:
        root = ET.fromstring(packet[start : end + len(end_tag)])
    except (ET.ParseError, ValueError, RecursionError):
        return None
    out: dict[str, str] = {}
    for el in root.iter():
        for k, v in el.attrib.items():  # the attribute form: <rdf:Description Iptc4xmpExt:DigitalSourceType="...">
            if k in WANTED and v.strip():
                out.setdefault(WANTED[k], v.strip())
        if el.tag in WANTED:
            v = _value(el)
            if v:
                out.setdefault(WANTED[el.tag], v)
    return out


def read(packets: list[bytes], names=None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for packet in packets:
        f = fields(packet)
        if f is None:
            out.append(make_item("xmp", "unknown", field="XMP", value="malformed or refused XMP packet"))
            continue
        out += _items(f, names)
    return out


def _items(f: dict[str, str], names) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tool = f.get("Iptc4xmpExt:AISystemUsed") or f.get("xmp:CreatorTool") or f.get("tiff:Software")
    dst = f.get("Iptc4xmpExt:DigitalSourceType")
    if dst:
        claim = source_type_claim(dst) or "unknown"
        item = make_item("xmp", claim, field="XMP Iptc4xmpExt:DigitalSourceType", value=dst)
        if claim in ("ai-generated", "composite-ai") and tool:
            hit = named("xmp", tool, field="", names=names)
            item |= {"name": hit["name"], "generator": hit["generator"], "family": hit["family"]}
        out.append(item)
    if f.get("Iptc4xmpExt:AISystemUsed"):
        out += generated_by(
            "xmp",
            f["Iptc4xmpExt:AISystemUsed"],
            [(f["Iptc4xmpExt:AISystemUsed"], "")],
            field="XMP Iptc4xmpExt:AISystemUsed",
            names=names,
        )
    for key in ("xmp:CreatorTool", "tiff:Software", "photoshop:Credit"):
        if f.get(key):
            it = named("xmp", f[key], field=f"XMP {key}", value=f[key], names=names)
            if it["claim"] != "unknown" or key != "photoshop:Credit":
                out.append(it)
    if f.get("tiff:Make") or f.get("tiff:Model"):
        cam = " ".join(x for x in (f.get("tiff:Make"), f.get("tiff:Model")) if x)
        out.append(make_item("xmp", "camera-capture", field="XMP tiff:Make/Model", value=cam, name=cam))
    uc = f.get("exif:UserComment")
    doc = fe.loads(uc) if uc and uc.lstrip().startswith("{") else None
    if isinstance(doc, dict) and "model" in doc:
        out += generated_by("xmp", "Draw Things", fe.drawthings(doc), field="XMP exif:UserComment", names=names)
    desc = f.get("dc:description")
    if desc:
        out += described("xmp", desc, field="XMP dc:description", names=names)
    return out
