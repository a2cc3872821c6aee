"""Reading C2PA manifest stores: validation state, status codes, what a manifest declares.

Used for the provenance an asset already carries (``provenance`` in ``lida attribute`` records)
and by ``lida verify``. A manifest that cannot be parsed is reported (``status: "corrupt"``),
never raised: callers decide what it means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ASSERTION_LABEL = "org.lida.attribution"
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = IPTC + "trainedAlgorithmicMedia"
#: Digital source types that declare (some) AI-generated content.
AI_SOURCE_TYPES = {
    IPTC + t
    for t in (
        "trainedAlgorithmicMedia",
        "compositeWithTrainedAlgorithmicMedia",
        "algorithmicMedia",
        "compositeSynthetic",
    )
}
#: Digital source types that declare a capture (camera, scan, screen): no generated pixels.
CAPTURE_SOURCE_TYPES = {
    IPTC + t
    for t in ("digitalCapture", "computationalCapture", "negativeFilm", "positiveFilm", "print", "screenCapture",
              "compositeCapture", "digitalArt", "virtualRecording")
}  # fmt: skip

MIME_BY_SUFFIX = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".tif": "image/tiff",
    ".tiff": "image/tiff", ".gif": "image/gif", ".avif": "image/avif", ".heic": "image/heic", ".heif": "image/heif",
    ".jxl": "image/jxl", ".bmp": "image/bmp", ".dng": "image/dng",
}  # fmt: skip
PIL_FORMAT_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
                   "GIF": "image/gif", "AVIF": "image/avif", "HEIF": "image/heif", "BMP": "image/bmp",
                   "MPO": "image/jpeg"}  # fmt: skip


def mime_for(path: str | os.PathLike[str], pil_format: str | None = None) -> str:
    """The asset's MIME type: from the decoded format when known (content beats a wrong suffix), else the suffix."""
    if pil_format and pil_format.upper() in PIL_FORMAT_MIME:
        return PIL_FORMAT_MIME[pil_format.upper()]
    return MIME_BY_SUFFIX.get(Path(path).suffix.lower(), "application/octet-stream")


def make_context(trust_anchors: list[bytes] | None = None, *, thumbnails: bool = False):
    """A c2pa ``Context``: thumbnails off by default, ``trust.user_anchors`` from PEM bytes."""
    import c2pa

    settings: dict[str, Any] = {"builder": {"thumbnail": {"enabled": thumbnails}}}
    if trust_anchors:
        settings["trust"] = {
            "user_anchors": "\n".join(a.decode("ascii", "replace").strip() for a in trust_anchors) + "\n"
        }
    return c2pa.Context.from_dict(settings)


def _codes(results: dict | None, key: str) -> list[str]:
    am = (results or {}).get("activeManifest") or {}
    return [e.get("code") for e in am.get(key) or [] if e.get("code")]


def _actions(manifest: dict) -> list[dict]:
    out = []
    for a in manifest.get("assertions") or []:
        if str(a.get("label", "")).startswith("c2pa.actions"):
            out.extend((a.get("data") or {}).get("actions") or [])
    return out


def _assertion(manifest: dict, label: str) -> Any:
    for a in manifest.get("assertions") or []:
        if a.get("label") == label:
            return a.get("data")
    return None


def summarize_store(store: dict, state: str | None, results: dict | None) -> dict[str, Any]:
    """What the active manifest declares, from ``Reader.json()``'s dict."""
    active_label = store.get("active_manifest")
    m = (store.get("manifests") or {}).get(active_label) or {}
    actions = _actions(m)
    source_types = sorted({a["digitalSourceType"] for a in actions if a.get("digitalSourceType")})
    ai_actions = [a for a in actions if a.get("digitalSourceType") in AI_SOURCE_TYPES]
    agents = []
    for a in ai_actions or actions:
        sa = a.get("softwareAgent")
        name = sa.get("name") if isinstance(sa, dict) else sa
        if name and name not in agents:
            agents.append(name)
    cgi = m.get("claim_generator_info") or []
    claim_generator = ", ".join(str(c.get("name")) for c in cgi if isinstance(c, dict) and c.get("name")) or m.get(
        "claim_generator"
    )
    sig = m.get("signature_info") or {}
    lida = _assertion(m, ASSERTION_LABEL)
    return {
        "status": "present",
        "validation_state": state,
        "failure_codes": _codes(results, "failure"),
        "active_manifest": active_label,
        "manifests": len(store.get("manifests") or {}),
        "title": m.get("title"),
        "claim_generator": claim_generator,
        "signer": {
            "issuer": sig.get("issuer"),
            "common_name": sig.get("common_name"),
            "alg": sig.get("alg"),
            "time": sig.get("time"),
        }
        if sig
        else None,  # fmt: skip
        "digital_source_types": source_types,
        "declares_ai": bool(ai_actions) if source_types else None,
        "declared_generator": agents[0] if ai_actions and agents else None,
        "software_agents": agents,
        "lida_attribution": lida,
    }


def read_store(
    path: str | os.PathLike[str],
    *,
    sidecar: bytes | None = None,
    mime: str | None = None,
    context=None,
) -> tuple[dict[str, Any], dict | None]:
    """``(summary, raw store dict)`` for the manifest embedded in ``path`` (or in ``sidecar`` bytes).

    ``summary["status"]`` is ``"none"`` (no manifest), ``"present"`` or ``"corrupt"`` (with ``error``).
    """
    import c2pa

    mime = mime or mime_for(path)
    try:
        with open(path, "rb") as f:
            reader = c2pa.Reader(mime, f, sidecar, context=context) if context else c2pa.Reader(mime, f, sidecar)
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state()
                results = reader.get_validation_results()
    except c2pa.C2paError.ManifestNotFound:
        return {"status": "none"}, None
    except c2pa.C2paError as exc:
        msg = str(exc)
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF data found" in msg:
            return {"status": "none"}, None
        if sidecar is None and "NotSupported" in type(exc).__name__:  # a format that cannot embed a manifest
            return {"status": "none", "note": f"{mime} cannot carry an embedded manifest"}, None
        return {"status": "corrupt", "error": f"{type(exc).__name__.lstrip('_').replace('C2pa', '')}: {msg}"}, None
    except OSError as exc:
        return {"status": "unreadable", "error": exc.strerror or str(exc)}, None
    return summarize_store(store, state, results), store


def compare(declared: dict[str, Any], record: dict[str, Any]) -> dict[str, Any] | None:
    """How a prior manifest's declaration relates to our fingerprint verdict.

    ``{"agrees": bool|None, "detail": str}``: ``agrees`` is ``None`` when there is nothing to compare
    (no declaration, or an inconclusive verdict). Disagreement is stated, never smoothed over.
    """
    if declared.get("status") != "present":
        return None
    verdict = record.get("verdict")
    ours = record.get("generator")
    types = declared.get("digital_source_types") or []
    says_ai = any(t in AI_SOURCE_TYPES for t in types)
    says_capture = any(t in CAPTURE_SOURCE_TYPES for t in types)
    claimed = declared.get("declared_generator")
    prior_lida = declared.get("lida_attribution") or {}
    if not types and not prior_lida:
        return {"agrees": None, "detail": "the prior manifest declares no digital source type"}
    if verdict not in ("real", "ai-generated"):
        return {"agrees": None, "detail": f"fingerprint verdict is {verdict}: the declaration cannot be checked"}
    notes = []
    agrees = True
    if says_ai and verdict == "real":
        agrees = False
        notes.append("the manifest declares AI-generated content but the fingerprint says real")
    elif says_capture and not says_ai and verdict == "ai-generated":
        agrees = False
        notes.append("the manifest declares a capture but the fingerprint says AI-generated")
    elif says_ai and verdict == "ai-generated":
        notes.append("both say AI-generated")
    elif says_capture and verdict == "real":
        notes.append("both say not generated")
    if claimed and ours and _norm(claimed) != _norm(ours) and _norm(ours) not in _norm(claimed):
        agrees = False
        notes.append(f"the manifest names {claimed!r} but the nearest registered generator is {ours!r}")
    if prior_lida.get("verdict") and prior_lida.get("verdict") != verdict:
        agrees = False
        notes.append(f"an earlier lida attribution said {prior_lida.get('verdict')}")
    elif prior_lida.get("verdict"):
        notes.append("an earlier lida attribution agrees")
    return {"agrees": agrees, "detail": "; ".join(notes) or "no conflict found"}


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())
