"""Parsers for what generator front ends write into text metadata (PNG text, EXIF UserComment, JPEG COM, XMP).

Each returns the model/tool names found (``[(name, field suffix)]``), never raises, and reads at
most :data:`MAX_JSON` characters of JSON, walked to at most :data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON = 1 << 20
MAX_DEPTH = 32
MAX_NAMES = 8

#: The last line of an AUTOMATIC1111 / Forge / SD.Next ``parameters`` text: "Steps: 20, Sampler: ..., Model: x".
_A1111_PARAMS = re.compile(r"(?:^|\n)Steps: \d+,[^\n]*$")
_A1111_FIELD = re.compile(r"(?:^|, )(Model|Model hash|Version|Hypernet|Refiner): (\"[^\"]{0,300}\"|[^,\n]{0,300})")
_MIDJOURNEY_JOB = re.compile(r"Job ID: [0-9a-f]{8}-[0-9a-f]{4}-", re.IGNORECASE)

#: ComfyUI input keys that name the generating model (checkpoint / diffusion model).
COMFY_MODEL_KEYS = ("ckpt_name", "unet_name", "model_name", "model_path", "base_ckpt_name")
_COMFY_SKIP = re.compile(r"lora|vae|clip|upscale|controlnet|ipadapter|style|gligen|hypernet|embedding", re.I)


def loads(text: str | bytes | None) -> Any:
    """JSON with a size limit; ``None`` when absent, too large, too deep or malformed."""
    if text is None or len(text) > MAX_JSON:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError):
        return None


def a1111(text: str | None) -> list[tuple[str, str]] | None:
    """The model named by an A1111/Forge ``parameters`` text; ``None`` when the text is not one."""
    if not isinstance(text, str) or "Steps: " not in text:
        return None
    tail = text[-8192:]
    m = _A1111_PARAMS.search(tail)
    if not m:
        return None
    fields = {k: v.strip().strip('"') for k, v in _A1111_FIELD.findall(m.group(0))}
    out = []
    if fields.get("Model"):
        out.append((fields["Model"], "Model"))
    elif fields.get("Model hash"):
        out.append((fields["Model hash"], "Model hash"))
    if fields.get("Refiner"):
        out.append((fields["Refiner"], "Refiner"))
    return out


def a1111_hash(text: str) -> str | None:
    m = re.search(r"(?:^|, )Model hash: ([0-9a-fA-F]{6,64})", text[-8192:])
    return m.group(1) if m else None


def midjourney(text: str | None) -> bool:
    return isinstance(text, str) and bool(_MIDJOURNEY_JOB.search(text[-4096:]))


def _walk(obj: Any, depth: int = 0):
    """Every dict in ``obj`` down to :data:`MAX_DEPTH` levels."""
    if depth > MAX_DEPTH:
        return
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj[:10_000]:
            yield from _walk(v, depth + 1)


def _add(out: list[tuple[str, str]], name: Any, field: str) -> None:
    if isinstance(name, str) and name.strip() and len(out) < MAX_NAMES and all(n != name for n, _ in out):
        out.append((name.strip(), field))


def comfy_prompt(doc: Any) -> list[tuple[str, str]]:
    """Checkpoint names in a ComfyUI API ``prompt`` (``{node: {class_type, inputs}}``)."""
    out: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        return out
    hints: list[tuple[str, str]] = []
    for node in list(doc.values())[:10_000]:
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        ct = str(node.get("class_type", ""))[:100]
        for key in COMFY_MODEL_KEYS:
            if key in node["inputs"] and not _COMFY_SKIP.search(ct):
                _add(out, node["inputs"][key], f"{ct}.{key}")
        if "CLIPLoader" in ct and isinstance(node["inputs"].get("type"), str):
            _add(hints, node["inputs"]["type"], f"{ct}.type")
    return out or hints


def comfy_workflow(doc: Any) -> list[tuple[str, str]]:
    """Checkpoint names in a ComfyUI UI ``workflow`` (``{nodes: [{type, widgets_values}]}``)."""
    out: list[tuple[str, str]] = []
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        return out
    for node in nodes[:10_000]:
        if not isinstance(node, dict):
            continue
        t = str(node.get("type", ""))[:100]
        wv = node.get("widgets_values")
        if "Loader" in t and not _COMFY_SKIP.search(t) and isinstance(wv, list) and wv:
            _add(out, wv[0], f"{t}.widgets_values[0]")
    return out


def invokeai(doc: Any) -> list[tuple[str, str]]:
    """Model names in InvokeAI ``invokeai_metadata`` (v3+: ``model.name``/``model.model_name``) or ``sd-metadata``."""
    out: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        return out
    model = doc.get("model")
    if isinstance(model, dict):
        _add(out, model.get("name") or model.get("model_name"), "model.name")
        if not out and isinstance(model.get("base") or model.get("base_model"), str):
            _add(out, model.get("base") or model.get("base_model"), "model.base")
    elif isinstance(model, str):
        _add(out, model, "model")
    _add(out, doc.get("model_weights"), "model_weights")  # sd-metadata (InvokeAI 2.x)
    image = doc.get("image")
    if isinstance(image, dict):
        _add(out, image.get("model_weights"), "image.model_weights")
    return out


def fooocus(doc: Any) -> list[tuple[str, str]]:
    """Model names in Fooocus ``parameters`` JSON (``base_model``/``refiner_model``; ``Base Model`` in old files)."""
    out: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        return out
    for key in ("base_model", "Base Model", "refiner_model", "Refiner Model"):
        v = doc.get(key)
        if isinstance(v, str) and v.lower() != "none":
            _add(out, v, key)
    return out


def novelai(software: str | None, source: str | None, comment: Any) -> list[tuple[str, str]]:
    """NovelAI: ``Software: NovelAI``, ``Source: <model + hash>``, ``Comment`` JSON (parameters)."""
    out: list[tuple[str, str]] = []
    if isinstance(source, str):
        _add(out, source, "Source")
    if isinstance(comment, dict):
        _add(out, comment.get("model") if isinstance(comment.get("model"), str) else None, "Comment.model")
    if not out and isinstance(software, str):
        _add(out, software, "Software")
    return out


def drawthings(doc: Any) -> list[tuple[str, str]]:
    """Draw Things' JSON (XMP ``exif:UserComment`` or PNG ``Description``): ``model``."""
    out: list[tuple[str, str]] = []
    if isinstance(doc, dict):
        _add(out, doc.get("model"), "model")
    return out
