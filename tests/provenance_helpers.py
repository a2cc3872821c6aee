"""Helpers for the provenance tests (keys, records, images, reading manifests back)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import synthetic_pixels
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ASSERTION_SCHEMA = json.loads((REPO / "lida_plugin/schemas/lida-attribution-assertion.schema.json").read_text())
RESULT_SCHEMA = json.loads((REPO / "lida_plugin/schemas/attribution-result.schema.json").read_text())
PIL_SAVE = {
    "png": ("PNG", {}),
    "jpg": ("JPEG", {"quality": 95}),
    "webp": ("WEBP", {"lossless": True}),
    "tif": ("TIFF", {}),
    "bmp": ("BMP", {}),
}
MIME = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "tif": "image/tiff", "bmp": "image/bmp"}


def write_image(path: Path, ext: str, kind: str = "gen-a", seed: int = 1, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, kw = PIL_SAVE[ext]
    Image.fromarray(synthetic_pixels(kind, seed, size)).save(path, format=fmt, **kw)
    return path


def record_for(path: Path, verdict: str = "ai-generated", generator: str | None = "sd-xl-turbo", **over) -> dict:
    """A record shaped like ``Result.to_dict()`` for ``path`` (the manifest writer needs nothing else)."""
    data = path.read_bytes()
    with Image.open(path) as im:
        fmt = im.format
    rec = {
        "path": str(path),
        "status": "ok",
        "verdict": verdict,
        "generator": generator if verdict == "ai-generated" else None,
        "family": "sdxl" if generator and verdict == "ai-generated" else None,
        "score": 0.93,
        "reason": "test",
        "detection": {"ai_score": 0.93, "threshold": 0.5, "similarity_to_real": 0.1},
        "neighbors": [{"generator": "sd-xl-turbo", "family": "sdxl", "similarity": 0.97, "exemplar": "x.png"}],
        "reliability": {"reliable": True, "forced": False, "reasons": [], "notes": []},
        "image": {
            "format": fmt,
            "mode": "RGB",
            "width": 64,
            "height": 64,
            "sha256": hashlib.sha256(data).hexdigest(),
            "crops": 4,
        },  # fmt: skip
        "model_id": "tiny-test-encoder",
        "store_id": "store-1",
    }
    rec.update(over)
    return rec


def read_back(path: Path, sidecar: bytes | None = None, anchor: Path | None = None) -> tuple[str, list[str], dict]:
    """``(validation state, failure codes, store dict)`` as c2pa-python reads them."""
    import c2pa

    from lida_plugin.provenance import make_context, mime_for

    with Image.open(path) as im:
        mime = mime_for(path, im.format)
    ctx = make_context([anchor.read_bytes()] if anchor else None)
    with open(path, "rb") as f, c2pa.Reader(mime, f, sidecar, context=ctx) as r:
        store = json.loads(r.json())
        state = r.get_validation_state()
        fails = [e["code"] for e in (r.get_validation_results()["activeManifest"].get("failure") or [])]
    ctx.close()
    return state, fails, store


def active(store: dict) -> dict:
    return store["manifests"][store["active_manifest"]]


def assertion(store: dict, label: str = "org.lida.attribution"):
    for a in active(store)["assertions"]:
        if a["label"] == label:
            return a["data"]
    return None
