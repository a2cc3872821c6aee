"""The verdict rule: one record, several pieces of evidence (documented in docs/provenance.md, tested in
tests/test_evidence_combine.py).

:func:`combine` is pure: ``(record, items) -> changes``. In order:

1. **Measured.** The fingerprint's verdict stands when it is ``real`` or ``ai-generated``. When it is
   ``inconclusive`` (lossy input), a *calibrated* ``lossy-detector`` item gives the detection verdict
   (``ai-generated`` with no generator: attribution stays inconclusive, or ``real``); an uncalibrated one is
   a hint only and changes nothing.
2. **Bound declaration.** An AI claim (``ai-generated`` / ``composite-ai``) that is cryptographically bound
   (a C2PA manifest whose signature and hashes validate) decides ``ai-generated`` whatever the pixels say;
   its generator, when it names one, is the record's generator.
3. **Unbound declaration** (XMP, EXIF, PNG text, JPEG comment, an Invalid C2PA manifest) *raises or names,
   never clears*: it turns ``real`` / ``inconclusive`` into ``ai-generated`` (generator from the declared
   name, ``score`` null, ``decided_by`` the source), and names the generator of an ``ai-generated`` verdict
   that has none (open set, lossy detector). It never replaces a generator the fingerprint matched.
4. **Never cleared.** No declaration turns ``ai-generated`` into ``real``: a declared camera capture (bound or
   not), ``edited`` or ``unknown`` claim changes no verdict.
5. **Disagreement is reported**, never hidden: ``disagreement`` lists each conflict (declared AI vs measured
   ``real``, declared capture vs measured ``ai-generated``, declarations contradicting each other, declared
   and matched generators of different families).
6. ``inconclusive`` stays when nothing usable is there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .items import AI_CLAIMS, clip, make_item

REAL, AI, INCONCLUSIVE = "real", "ai-generated", "inconclusive"


def fingerprint_item(record: dict[str, Any]) -> dict[str, Any]:
    """The pixel fingerprint's own finding as an evidence item (``calibrated`` false when unreliable)."""
    verdict = record.get("verdict")
    det = record.get("detection") or {}
    rel = record.get("reliability") or {}
    claim = {AI: "ai-generated", REAL: "not-detected"}.get(verdict, "unknown")
    return make_item(
        "fingerprint",
        claim,
        field="pixels: low-bit fingerprint",
        value=record.get("reason"),
        generator=record.get("generator") if verdict == AI else None,
        family=record.get("family") if verdict == AI else None,
        measured=True,
        score=det.get("ai_score"),
        threshold=det.get("threshold"),
        calibrated=bool(verdict in (AI, REAL) and rel.get("reliable", True)),
    )


def _what(i: dict[str, Any]) -> str:
    n = i.get("name") or i.get("generator") or i.get("family")
    return f"{i['field']} ({i['claim']}{': ' + str(n) if n else ''})"


def _declared_rank(i: dict[str, Any]) -> tuple:
    # the most specific declaration names the generator: one with an id, then a family, then a raw name
    return (i.get("generator") is None, i.get("family") is None, i.get("name") is None)


def combine(record: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields of ``record`` that the evidence sets: verdict, generator, family, score, reason,
    ``evidence`` (the fingerprint's item first), ``disagreement`` and ``decided_by``."""
    verdict, gen, fam = record.get("verdict"), record.get("generator"), record.get("family")
    score, reason = record.get("score"), record.get("reason") or ""
    fp = fingerprint_item(record)
    evidence = [fp] + [dict(i) for i in items if i.get("source") != "fingerprint"]
    decided = "fingerprint" if verdict in (AI, REAL) else None
    notes: list[str] = []
    disagreement: list[dict[str, Any]] = []

    # 1. measured: a calibrated lossy detector answers when the fingerprint cannot
    if verdict == INCONCLUSIVE:
        lossy = [i for i in evidence if i["source"] == "lossy-detector" and i.get("measured") and i.get("calibrated")]
        if lossy and lossy[0]["claim"] in ("ai-generated", "not-detected"):
            li = lossy[0]
            s, t = li.get("score"), li.get("threshold")
            verdict = AI if li["claim"] == "ai-generated" else REAL
            gen = fam = None
            score = None if s is None else round(float(s) if verdict == AI else 1.0 - float(s), 6)
            decided = "lossy-detector"
            notes.append(
                f"lossy detector: score {s} {'>=' if verdict == AI else '<'} its calibrated threshold {t}"
                f"{'; generator not attributed (fingerprint unreliable)' if verdict == AI else ''}"
            )
    measured, measured_by = verdict, decided

    declared = [i for i in evidence if not i.get("measured")]
    ai_decl = [i for i in declared if i["claim"] in AI_CLAIMS]
    capture = [i for i in declared if i["claim"] == "camera-capture"]
    bound_ai = [i for i in ai_decl if i.get("bound")]

    # 5. disagreements between what the file declares and what was measured, and within the declarations
    if measured == REAL:
        for i in ai_decl:
            disagreement.append(
                {
                    "between": [i["source"], measured_by],
                    "detail": f"{_what(i)} declares AI-generated content but the {measured_by} says real",
                }
            )
    if measured == AI:
        for i in capture:
            disagreement.append(
                {
                    "between": [i["source"], measured_by],
                    "detail": f"{_what(i)} declares a capture but the {measured_by} says ai-generated",
                }
            )
    if ai_decl and capture:
        disagreement.append(
            {
                "between": sorted({ai_decl[0]["source"], capture[0]["source"]}),
                "detail": f"the declarations contradict each other: {_what(ai_decl[0])} vs {_what(capture[0])}",
            }
        )
    fams = {i["family"] for i in ai_decl if i.get("family")}
    if len(fams) > 1:
        disagreement.append(
            {
                "between": sorted({i["source"] for i in ai_decl if i.get("family")}),
                "detail": f"the declarations name different families: {', '.join(sorted(fams))}",
            }
        )

    # 2. a bound AI declaration decides; 3. an unbound one raises or names
    chosen = None
    if bound_ai:
        chosen = sorted(bound_ai, key=_declared_rank)[0]
        if verdict != AI:
            score = None
        verdict, decided = AI, chosen["source"]
        notes.insert(
            0,
            f"signed {chosen['source'].upper()} manifest ({chosen.get('validation_state') or 'valid'})"
            f" declares {_what(chosen)}",
        )
    elif ai_decl:
        chosen = sorted(ai_decl, key=_declared_rank)[0]
        if verdict in (REAL, INCONCLUSIVE):
            verdict, score, decided = AI, None, chosen["source"]
            gen = fam = None
            notes.insert(0, f"declared by {_what(chosen)}: unsigned metadata, not verified")
    if chosen is not None and verdict == AI:
        c_gen, c_fam = chosen.get("generator"), chosen.get("family")
        if gen is None and (c_gen or c_fam):
            gen, fam = c_gen, c_fam or fam
            if decided != chosen["source"]:
                notes.append(f"generator named by {_what(chosen)}")
        elif gen is not None and (c_gen or c_fam) and (c_fam or c_gen) != (fam or gen) and c_gen != gen:
            disagreement.append(
                {
                    "between": [chosen["source"], "fingerprint"],
                    "detail": f"{_what(chosen)} names {c_gen or c_fam} but the nearest registered"
                    f" generator is {gen} ({fam})",
                }
            )
            if chosen.get("bound"):
                gen, fam = c_gen, c_fam
    if notes:
        reason = "; ".join(notes) + (f"; fingerprint: {reason}" if reason else "")
    return {
        "verdict": verdict,
        "generator": gen if verdict == AI else None,
        "family": fam if verdict == AI else None,
        "score": score,
        "reason": clip(reason, 2000),
        "evidence": evidence,
        "disagreement": disagreement,
        "decided_by": decided,
    }


def apply_evidence(result, items: list[dict[str, Any]]):
    """``result`` (an ``attribute.Result`` or a record dict) with the evidence combined in; errors pass through."""
    record = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    if record.get("status", "ok") != "ok":
        return result
    changes = combine(record, items)
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, **changes)
    return record | changes
