"""The evidence item: one piece of evidence about an asset, with its source.

Schema: ``schemas/evidence-item.schema.json``.

Shared by every reader, the fingerprint and the lossy detector; :mod:`.combine` turns a list of them into the
record's verdict.
"""

from __future__ import annotations

from typing import Any

#: Where a piece of evidence comes from.
SOURCES = ("c2pa", "xmp", "iptc", "exif", "png-text", "jpeg-comment", "fingerprint", "lossy-detector")
#: What it says about the asset.
CLAIMS = ("ai-generated", "composite-ai", "camera-capture", "edited", "not-detected", "unknown")
#: Claims that say generated pixels are (at least partly) in the asset.
AI_CLAIMS = ("ai-generated", "composite-ai")
#: Longest raw value kept in an item.
MAX_VALUE = 200

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
#: IPTC digital source type (the last path segment) -> claim; anything else is ``unknown``.
SOURCE_TYPE_CLAIMS = {
    "trainedAlgorithmicMedia": "ai-generated",
    "algorithmicMedia": "ai-generated",
    "compositeWithTrainedAlgorithmicMedia": "composite-ai",
    "compositeSynthetic": "composite-ai",
    "digitalCapture": "camera-capture",
    "computationalCapture": "camera-capture",
    "negativeFilm": "camera-capture",
    "positiveFilm": "camera-capture",
    "print": "camera-capture",
    "compositeCapture": "camera-capture",
    "screenCapture": "camera-capture",
    "humanEdits": "edited",
    "minorHumanEdits": "edited",
    "algorithmicallyEnhanced": "edited",
    "composite": "edited",
}
#: Which of several claims of one source is reported first (generated pixels are never hidden by a capture claim).
CLAIM_RANK = {c: i for i, c in enumerate(("ai-generated", "composite-ai", "camera-capture", "edited", "unknown"))}


def clip(value: Any, limit: int = MAX_VALUE) -> str | None:
    """``value`` as a string of at most ``limit`` characters (``None`` stays ``None``)."""
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    s = s.replace("\x00", "")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def source_type_claim(value: Any) -> str | None:
    """The claim of an IPTC digital source type (full URI or bare code), ``None`` when it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    code = value.strip().rstrip("/").rsplit("/", 1)[-1]
    return SOURCE_TYPE_CLAIMS.get(code, "unknown")


def make_item(
    source: str,
    claim: str,
    *,
    field: str,
    value: Any = None,
    name: str | None = None,
    generator: str | None = None,
    family: str | None = None,
    bound: bool = False,
    measured: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """An evidence item (declared unless ``measured``); extra keys (``score``, ``validation_state``, ...) are kept."""
    if source not in SOURCES:
        raise ValueError(f"unknown evidence source {source!r}")
    if claim not in CLAIMS:
        raise ValueError(f"unknown evidence claim {claim!r}")
    item: dict[str, Any] = {
        "source": source,
        "claim": claim,
        "generator": generator,
        "family": family,
        "name": clip(name),
        "bound": bool(bound),
        "measured": bool(measured),
        "field": clip(field),
        "value": clip(value),
    }
    item.update(extra)
    return item


def named(source: str, name: str | None, *, field: str, value: Any = None, names=None, **extra: Any) -> dict[str, Any]:
    """An item for a generator/tool name found in metadata: the name table says what it claims.

    A name the table knows gives its claim (``ai-generated`` for models, ``edited`` for editors) and ids;
    an unknown name is ``unknown`` (kept, so a reader sees what the file said).
    """
    from .names import lookup

    hit = lookup(name, names) if name else None
    if hit is None:
        return make_item(source, "unknown", field=field, value=value, name=name, **extra)
    return make_item(
        source, hit.claim, field=field, value=value, name=name, generator=hit.generator, family=hit.family, **extra
    )


def generated_by(
    source: str, tool: str, found: list[tuple[str, str]], *, field: str, value: Any = None, names=None
) -> list[dict[str, Any]]:
    """Items for a generator front end's own metadata: the front end made the pixels, so the claim is
    ``ai-generated`` whatever the model; the name table adds generator and family when it knows the name."""
    from .names import lookup

    if not found:
        return [make_item(source, "ai-generated", field=field, value=value, name=f"{tool} (no model named)")]
    out = []
    for name, sub in found:
        hit = lookup(name, names)
        claim = hit.claim if hit is not None and hit.claim in AI_CLAIMS else "ai-generated"
        out.append(
            make_item(
                source,
                claim,
                field=f"{field} {sub}".strip(),
                value=value if value is not None else name,
                name=name,
                generator=hit.generator if hit else None,
                family=hit.family if hit else None,
                tool=tool,
            )
        )
    return out


def described(source: str, text: str, *, field: str, names=None) -> list[dict[str, Any]]:
    """Items for a free-text description field: A1111/Forge parameters, else a Midjourney job line;
    nothing otherwise (EXIF ImageDescription and XMP dc:description read alike)."""
    from . import frontends as fe

    found = fe.a1111(text)
    if found is not None:
        return generated_by(source, "AUTOMATIC1111/Forge", found, field=field, names=names)
    if fe.midjourney(text):
        return generated_by(source, "Midjourney", [("Midjourney", "Job ID")], field=field, value=text, names=names)
    return []
