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


def read(texts: list[tuple[str, str, str]], names=None) -> list[dict[str, Any]]:
    chunk: dict[str, tuple[str, str]] = {}
    for ctype, key, text in texts:
        chunk.setdefault(key, (ctype, text))

    def f(key: str) -> str:
        return f"PNG {chunk[key][0]} {key}"

    def t(key: str) -> str | None:
        return chunk[key][1] if key in chunk else None

    out: list[dict[str, Any]] = []
    params = t("parameters")
    if params is not None:
        doc = fe.loads(params) if params.lstrip().startswith("{") else None
        if isinstance(doc, dict) or "fooocus_scheme" in chunk:
            out += generated_by("png-text", "Fooocus", fe.fooocus(doc), field=f("parameters"), names=names)
        else:
            found = fe.a1111(params)
            if found is None:
                out.append(make_item("png-text", "unknown", field=f("parameters"), value=params))
            else:
                h = fe.a1111_hash(params)
                out += generated_by("png-text", "AUTOMATIC1111/Forge", found, field=f("parameters"), names=names)
                if h:
                    for it in out:
                        it.setdefault("model_hash", h)
    if "prompt" in chunk or "workflow" in chunk:
        found = fe.comfy_prompt(fe.loads(t("prompt")))
        key = "prompt"
        if not found and "workflow" in chunk:
            found, key = fe.comfy_workflow(fe.loads(t("workflow"))), "workflow"
        if found or any(isinstance(fe.loads(t(k)), dict) for k in ("prompt", "workflow") if k in chunk):
            out += generated_by("png-text", "ComfyUI", found, field=f(key if key in chunk else "prompt"), names=names)
        else:
            k = "prompt" if "prompt" in chunk else "workflow"
            out.append(make_item("png-text", "unknown", field=f(k), value=t(k)))
    for key in ("invokeai_metadata", "sd-metadata"):
        if key in chunk:
            doc = fe.loads(t(key))
            if isinstance(doc, dict):
                out += generated_by("png-text", "InvokeAI", fe.invokeai(doc), field=f(key), names=names)
            else:
                out.append(make_item("png-text", "unknown", field=f(key), value=t(key)))
    if "Dream" in chunk and not any(k in chunk for k in ("invokeai_metadata", "sd-metadata")):
        out += generated_by("png-text", "InvokeAI", [], field=f("Dream"), value=t("Dream"), names=names)
    software = t("Software")
    if software is not None and software.strip().lower().startswith("novelai"):
        comment = fe.loads(t("Comment"))
        found = fe.novelai(software, t("Source"), comment)
        out += generated_by(
            "png-text", "NovelAI", found, field=f("Source" if "Source" in chunk else "Software"), names=names
        )
    elif software is not None:
        out.append(named("png-text", software.strip(), field=f("Software"), value=software, names=names))
    desc = t("Description")
    if desc is not None:
        doc = fe.loads(desc) if desc.lstrip().startswith("{") else None
        if isinstance(doc, dict) and "model" in doc:
            out += generated_by("png-text", "Draw Things", fe.drawthings(doc), field=f("Description"), names=names)
        elif fe.midjourney(desc):
            out += generated_by(
                "png-text", "Midjourney", [("Midjourney", "Job ID")], field=f("Description"), value=desc, names=names
            )
    return out
