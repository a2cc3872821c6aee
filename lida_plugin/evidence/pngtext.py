"""PNG text chunks (tEXt, zTXt, iTXt) that generator front ends write.

AUTOMATIC1111 / Forge / SD.Next ``parameters`` text, ComfyUI ``prompt`` / ``workflow`` JSON (the
loader nodes name the checkpoint), InvokeAI ``invokeai_metadata`` / ``sd-metadata`` / ``Dream``,
NovelAI ``Software`` / ``Source`` / ``Comment``, Fooocus ``parameters`` JSON (with ``fooocus_scheme``),
Draw Things / Midjourney ``Description``; any other ``Software`` is looked up in the name table.
"""

from __future__ import annotations

from typing import Any

from . import frontends as fe
from .items import generated_by, make_item, named

#: Text chunk key -> ``(chunk type, text)``, the first chunk of each key.
_Chunks = dict[str, tuple[str, str]]


def read(texts: list[tuple[str, str, str]], names=None) -> list[dict[str, Any]]:
    chunk: _Chunks = {}
    for ctype, key, text in texts:
        chunk.setdefault(key, (ctype, text))
    out: list[dict[str, Any]] = []
    for reader in (_parameters, _comfyui, _invokeai, _software, _description):
        out += reader(chunk, names)
    return out


def _f(chunk: _Chunks, key: str) -> str:
    """The item ``field`` of chunk ``key``, e.g. ``PNG tEXt parameters``."""
    return f"PNG {chunk[key][0]} {key}"


def _t(chunk: _Chunks, key: str) -> str | None:
    """The text of chunk ``key`` (None when the file has none)."""
    return chunk[key][1] if key in chunk else None


def _parameters(chunk: _Chunks, names) -> list[dict[str, Any]]:
    """``parameters``: Fooocus JSON, or AUTOMATIC1111 / Forge / SD.Next text (with its model hash)."""
    params = _t(chunk, "parameters")
    if params is None:
        return []
    doc = fe.loads(params) if params.lstrip().startswith("{") else None
    if isinstance(doc, dict) or "fooocus_scheme" in chunk:
        return generated_by("png-text", "Fooocus", fe.fooocus(doc), field=_f(chunk, "parameters"), names=names)
    found = fe.a1111(params)
    if found is None:
        return [make_item("png-text", "unknown", field=_f(chunk, "parameters"), value=params)]
    h = fe.a1111_hash(params)
    out = generated_by("png-text", "AUTOMATIC1111/Forge", found, field=_f(chunk, "parameters"), names=names)
    if h:
        for it in out:
            it.setdefault("model_hash", h)
    return out


def _comfyui(chunk: _Chunks, names) -> list[dict[str, Any]]:
    """ComfyUI ``prompt`` / ``workflow`` JSON: the loader nodes name the checkpoint."""
    if "prompt" not in chunk and "workflow" not in chunk:
        return []
    found = fe.comfy_prompt(fe.loads(_t(chunk, "prompt")))
    key = "prompt"
    if not found and "workflow" in chunk:
        found, key = fe.comfy_workflow(fe.loads(_t(chunk, "workflow"))), "workflow"
    if found or any(isinstance(fe.loads(_t(chunk, k)), dict) for k in ("prompt", "workflow") if k in chunk):
        return generated_by(
            "png-text", "ComfyUI", found, field=_f(chunk, key if key in chunk else "prompt"), names=names
        )
    k = "prompt" if "prompt" in chunk else "workflow"
    return [make_item("png-text", "unknown", field=_f(chunk, k), value=_t(chunk, k))]


def _invokeai(chunk: _Chunks, names) -> list[dict[str, Any]]:
    """InvokeAI ``invokeai_metadata`` / ``sd-metadata`` JSON, or its older ``Dream`` text."""
    out: list[dict[str, Any]] = []
    for key in ("invokeai_metadata", "sd-metadata"):
        if key in chunk:
            doc = fe.loads(_t(chunk, key))
            if isinstance(doc, dict):
                out += generated_by("png-text", "InvokeAI", fe.invokeai(doc), field=_f(chunk, key), names=names)
            else:
                out.append(make_item("png-text", "unknown", field=_f(chunk, key), value=_t(chunk, key)))
    if "Dream" in chunk and not any(k in chunk for k in ("invokeai_metadata", "sd-metadata")):
        out += generated_by("png-text", "InvokeAI", [], field=_f(chunk, "Dream"), value=_t(chunk, "Dream"), names=names)
    return out


def _software(chunk: _Chunks, names) -> list[dict[str, Any]]:
    """NovelAI ``Software`` / ``Source`` / ``Comment``; any other ``Software`` from the name table."""
    software = _t(chunk, "Software")
    if software is None:
        return []
    if software.strip().lower().startswith("novelai"):
        comment = fe.loads(_t(chunk, "Comment"))
        found = fe.novelai(software, _t(chunk, "Source"), comment)
        key = "Source" if "Source" in chunk else "Software"
        return generated_by("png-text", "NovelAI", found, field=_f(chunk, key), names=names)
    return [named("png-text", software.strip(), field=_f(chunk, "Software"), value=software, names=names)]


def _description(chunk: _Chunks, names) -> list[dict[str, Any]]:
    """``Description``: Draw Things JSON or a Midjourney job."""
    desc = _t(chunk, "Description")
    if desc is None:
        return []
    doc = fe.loads(desc) if desc.lstrip().startswith("{") else None
    field = _f(chunk, "Description")
    if isinstance(doc, dict) and "model" in doc:
        return generated_by("png-text", "Draw Things", fe.drawthings(doc), field=field, names=names)
    if fe.midjourney(desc):
        return generated_by("png-text", "Midjourney", [("Midjourney", "Job ID")], field=field, value=desc, names=names)
    return []
