"""C2PA manifests (c2pa-python / c2pa-rs): what the active manifest and every ingredient declare, and
how each validates.

One ``Reader`` per file, and only when the container holds a manifest store (JPEG APP11 JUMBF, PNG
``caBX``, the bytes ``c2pa`` elsewhere) or a ``<stem>.c2pa`` sidecar is given: a file without one
costs nothing here. The summary of the active manifest comes from :func:`lida_plugin.provenance.summarize_store`
(the same reading ``lida attribute --manifest`` reports as ``provenance``).

Items (source ``c2pa``): one for the active manifest, with its ``validation_state``, ``failure_codes``,
``signer``, ``claim_generator``, ``digital_source_types`` and ``ingredients`` (each ingredient's own
validation: ``validation_state`` Valid / Invalid / null when it carries no manifest, and its
``failure_codes``, from the status stored in the ingredient and from c2pa-rs' ``ingredientDeltas``);
plus one per ingredient manifest (any depth) whose actions declare an AI digital source type.
``bound`` is true only for a manifest whose signature and hashes validate (Valid / Trusted), and for an
ingredient additionally when its own manifest validated. Actions signed by lida-plugin itself (an earlier
``lida attribute --manifest`` with ``--source-type-policy action``) are a detector's finding, not a
declaration of origin: they are reported under ``lida_attribution`` and never count as a claim.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from ..provenance import ASSERTION_LABEL, summarize_store
from .items import AI_CLAIMS, CLAIM_RANK, make_item, named, source_type_claim

log = logging.getLogger(__name__)

MAX_DEPTH = 16  # ingredient chain walked at most this deep
MAX_INGREDIENTS = 256
_SUCCESS_SUFFIXES = (".match", ".validated", ".trusted", ".insideValidity", ".notRevoked")
#: Codes that do not make a manifest Invalid (a test or self-made certificate is untrusted, not broken).
_BENIGN = {"signingCredential.untrusted", "timeStamp.untrusted"}
OWN_AGENT = "lida-plugin"


def _is_failure(code: str) -> bool:
    return bool(code) and not code.endswith(_SUCCESS_SUFFIXES)


def _agent(action: dict) -> str | None:
    sa = action.get("softwareAgent")
    name = sa.get("name") if isinstance(sa, dict) else sa
    return name if isinstance(name, str) else None


def _actions(manifest: dict) -> list[dict]:
    out = []
    for a in manifest.get("assertions") or []:
        if isinstance(a, dict) and str(a.get("label", "")).startswith("c2pa.actions"):
            acts = (a.get("data") or {}).get("actions") or []
            out += [x for x in acts if isinstance(x, dict)]
    return out


def declared(manifest: dict) -> tuple[str, str | None, str | None, list[str]]:
    """``(claim, value, agent, types)``: the strongest source-type claim of a manifest's actions (ours excluded)."""
    best, value, agent = "unknown", None, None
    types = []
    for act in _actions(manifest):
        dst = act.get("digitalSourceType")
        if not isinstance(dst, str) or (_agent(act) or "").startswith(OWN_AGENT):
            continue
        types.append(dst)
        claim = source_type_claim(dst) or "unknown"
        if CLAIM_RANK.get(claim, 99) < CLAIM_RANK.get(best, 99):
            best, value, agent = claim, dst, _agent(act)
    if best == "unknown" and _exif_camera(manifest):
        best, value = "camera-capture", _exif_camera(manifest)
    return best, value, agent, types


def _exif_camera(manifest: dict) -> str | None:
    """Make/Model of a ``stds.exif`` assertion (capture details a camera signed), if any."""
    for a in manifest.get("assertions") or []:
        if isinstance(a, dict) and a.get("label") == "stds.exif" and isinstance(a.get("data"), dict):
            d = {str(k).lower(): v for k, v in a["data"].items()}
            make = next((d[k] for k in ("exif:make", "tiff:make") if isinstance(d.get(k), str)), None)
            model = next((d[k] for k in ("exif:model", "tiff:model") if isinstance(d.get(k), str)), None)
            if make or model:
                return " ".join(x for x in (make, model) if x)
    return None


def _ingredient_codes(ing: dict, holder: str, deltas: list[dict]) -> list[str]:
    codes = [s.get("code") for s in ing.get("validation_status") or [] if isinstance(s, dict)]
    vr = ing.get("validation_results") or {}
    codes += [s.get("code") for s in ((vr.get("activeManifest") or {}).get("failure") or []) if isinstance(s, dict)]
    label = ing.get("label")
    if label:
        tail = f"{holder}/c2pa.assertions/{label}"
        for d in deltas:
            if str(d.get("ingredientAssertionURI", "")).endswith(tail):
                fails = (d.get("validationDeltas") or {}).get("failure") or []
                codes += [s.get("code") for s in fails if isinstance(s, dict)]
    out: list[str] = []
    for c in codes:
        if isinstance(c, str) and _is_failure(c) and c not in out:
            out.append(c)
    return out


def ingredients(store: dict, label: str, deltas: list[dict], depth: int = 0, seen=None) -> list[dict[str, Any]]:
    """Every ingredient of manifest ``label`` and, recursively, of its ingredients' manifests."""
    seen = set() if seen is None else seen
    manifests = store.get("manifests") or {}
    m = manifests.get(label) or {}
    out: list[dict[str, Any]] = []
    if depth > MAX_DEPTH or label in seen:
        return out
    seen.add(label)
    for ing in (m.get("ingredients") or [])[:MAX_INGREDIENTS]:
        if not isinstance(ing, dict):
            continue
        child = ing.get("active_manifest") if isinstance(ing.get("active_manifest"), str) else None
        codes = _ingredient_codes(ing, label, deltas)
        if child is None:
            state = None
        elif child not in manifests:
            state, codes = (
                "Invalid",
                codes + (["ingredient.manifest.missing"] if "ingredient.manifest.missing" not in codes else []),
            )
        else:
            state = "Invalid" if any(c not in _BENIGN for c in codes) else "Valid"
        claim, value, agent, _ = declared(manifests.get(child) or {}) if child else ("unknown", None, None, [])
        out.append(
            {
                "title": ing.get("title"),
                "relationship": ing.get("relationship"),
                "manifest": child,
                "validation_state": state,
                "failure_codes": codes,
                "depth": depth,
                "claim": claim,
                "source_type": value,
                "agent": agent,
            }
        )
        if child and len(out) < MAX_INGREDIENTS:
            out += ingredients(store, child, deltas, depth + 1, seen)
    return out


def read_reader(mime: str, data: bytes, sidecar: bytes | None = None, context=None):
    """``(store dict, state, results)`` from c2pa-python, or ``(None, status, error)`` for none / corrupt."""
    import c2pa

    try:
        stream = io.BytesIO(data)
        r = c2pa.Reader(mime, stream, sidecar, context=context) if context else c2pa.Reader(mime, stream, sidecar)
        with r:
            return json.loads(r.json()), r.get_validation_state(), r.get_validation_results()
    except c2pa.C2paError as exc:
        name = type(exc).__name__
        if "ManifestNotFound" in name or "no JUMBF data found" in str(exc):
            return None, "none", None
        if sidecar is None and "NotSupported" in name:
            return None, "none", None
        return None, "corrupt", f"{name.lstrip('_').replace('C2pa', '')}: {exc}"
    except (ValueError, TypeError) as exc:  # a store the JSON layer cannot represent
        return None, "corrupt", f"{type(exc).__name__}: {exc}"


def read(data: bytes, mime: str, *, sidecar: bytes | None = None, names=None, context=None) -> list[dict[str, Any]]:
    store, state, results = read_reader(mime, data, sidecar, context)
    where = "sidecar" if sidecar is not None else "embedded"
    if store is None:
        return [_unreadable_item(results, where)] if state == "corrupt" else []
    deltas = ((store.get("validation_results") or {}).get("ingredientDeltas")) or []
    ings = ingredients(store, store.get("active_manifest"), deltas)
    bound = state in ("Valid", "Trusted")
    out = [_active_item(store, state, results, ings, where, names)]
    out += [_ingredient_item(ing, bound, where, names) for ing in ings if ing["claim"] in AI_CLAIMS]
    return out


def _unreadable_item(error: str | None, where: str) -> dict[str, Any]:
    """The item for a manifest store c2pa-python could not read (``error`` says why)."""
    return make_item(
        "c2pa",
        "unknown",
        field=f"C2PA manifest store ({where})",
        value=error,
        validation_state="Invalid",
        failure_codes=["manifest.unreadable"],
        ingredients=[],
    )


def _claim_field(claim: str, value: str | None) -> str:
    """Where the active manifest's claim was read: a source-type URI, a signed EXIF camera, or the manifest."""
    if claim != "unknown" and value and value.startswith("http"):
        return "c2pa.actions/digitalSourceType"
    return "stds.exif" if claim == "camera-capture" else "C2PA manifest"


def _active_item(
    store: dict, state: str, results: Any, ings: list[dict[str, Any]], where: str, names
) -> dict[str, Any]:
    """The item for the active manifest: its claim, validation, signer and ``ings`` (its ingredients)."""
    summary = summarize_store(store, state, results)
    label = store.get("active_manifest")
    m = (store.get("manifests") or {}).get(label) or {}
    claim, value, agent, types = declared(m)
    name = agent if claim in AI_CLAIMS else summary.get("claim_generator")
    hit = named("c2pa", agent, field="", names=names) if claim in AI_CLAIMS and agent else None
    lida = summary.get("lida_attribution")
    return make_item(
        "c2pa",
        claim,
        field=f"{_claim_field(claim, value)} ({where})",
        value=value or summary.get("claim_generator"),
        name=name,
        generator=hit["generator"] if hit else None,
        family=hit["family"] if hit else None,
        bound=state in ("Valid", "Trusted"),
        validation_state=state,
        failure_codes=summary.get("failure_codes", []),
        manifest=label,
        manifests=summary.get("manifests"),
        signer=summary.get("signer"),
        claim_generator=summary.get("claim_generator"),
        digital_source_types=types,
        ingredients=ings,
        lida_attribution={k: lida.get(k) for k in ("version", "verdict", "generator", "family", "score")}
        if isinstance(lida, dict)
        else None,
    )


def _ingredient_item(ing: dict[str, Any], bound: bool, where: str, names) -> dict[str, Any]:
    """The item for an ingredient whose actions declare an AI source type (``bound``: the active manifest's)."""
    c = "composite-ai" if ing["relationship"] == "componentOf" else ing["claim"]
    hit = named("c2pa", ing["agent"], field="", names=names) if ing["agent"] else None
    return make_item(
        "c2pa",
        c,
        field=f"c2pa ingredient {ing['title']!r} c2pa.actions/digitalSourceType ({where})",
        value=ing["source_type"],
        name=ing["agent"],
        generator=hit["generator"] if hit else None,
        family=hit["family"] if hit else None,
        bound=bound and ing["validation_state"] == "Valid",
        validation_state=ing["validation_state"],
        failure_codes=ing["failure_codes"],
        manifest=ing["manifest"],
    )


__all__ = ["read", "read_reader", "ingredients", "declared", "ASSERTION_LABEL"]
