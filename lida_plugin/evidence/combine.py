"""The verdict rule: one record, several pieces of evidence (documented in docs/provenance.md, tested in
tests/test_evidence_combine.py).

:func:`combine` is pure: ``(record, items) -> changes``. In order:

1. **Measured.** The fingerprint's verdict stands when it is ``real`` or ``ai-generated`` from a reliable
   fingerprint. When it is ``inconclusive`` (lossy input), a *calibrated* ``lossy-detector`` item gives the
   detection verdict (``ai-generated`` with no generator: attribution stays inconclusive, or ``real``); an
   uncalibrated one is a hint only and changes nothing. When the user forced a verdict on a lossy input
   (``--force``), the lossy detector gives it, calibrated or not: on such input the fingerprint's
   detection is at chance (AUC 0.498 at JPEG q85: `python -m lida_plugin.evaluate.lossy DATA --forced-runtime 85`,
   docs/evaluation.md), the lossy detector's is not.
   Whenever a ``lossy-detector`` item is there, the record's ``detection.ai_score`` is that detector's
   score mapped onto the model's scale (:func:`on_scale`; ``detection.detector`` says so, ``threshold`` stays
   the model's); the raw scores of both detectors stay in their evidence items.
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


@dataclasses.dataclass
class _Verdict:
    """The record's verdict as the rule steps of :func:`combine` change it."""

    verdict: str | None
    generator: str | None
    family: str | None
    score: Any
    decided_by: str | None
    notes: list[str] = dataclasses.field(default_factory=list)
    disagreement: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def combine(record: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields of ``record`` that the evidence sets: verdict, generator, family, score, reason,
    ``evidence`` (the fingerprint's item first), ``disagreement`` and ``decided_by``."""
    verdict = record.get("verdict")
    v = _Verdict(
        verdict,
        record.get("generator"),
        record.get("family"),
        record.get("score"),
        "fingerprint" if verdict in (AI, REAL) else None,
    )
    evidence = [fingerprint_item(record)] + [dict(i) for i in items if i.get("source") != "fingerprint"]
    forced = bool((record.get("reliability") or {}).get("forced"))
    if v.verdict == INCONCLUSIVE or (forced and v.verdict in (AI, REAL)):
        _step_measured(v, evidence, forced, (record.get("detection") or {}).get("threshold"))  # 1.
    declared = [i for i in evidence if not i.get("measured")]
    ai_decl = [i for i in declared if i["claim"] in AI_CLAIMS]
    capture = [i for i in declared if i["claim"] == "camera-capture"]
    bound_ai = [i for i in ai_decl if i.get("bound")]
    v.disagreement += _step_disagreements(v.verdict, v.decided_by, ai_decl, capture)  # 5.
    chosen = None
    if bound_ai:
        chosen = _step_bound_declaration(v, bound_ai)  # 2.
    elif ai_decl:
        chosen = _step_unbound_declaration(v, ai_decl)  # 3.
    if chosen is not None and v.verdict == AI:
        _name_generator(v, chosen)  # 2. and 3.: the declaration names the generator
    # 4. and 6. need no step: nothing above turns ai-generated into real, or decides without evidence
    reason = record.get("reason") or ""
    if v.notes:
        reason = "; ".join(v.notes) + (f"; fingerprint: {reason}" if reason else "")
    return {
        "detection": _detection(record.get("detection"), evidence),
        "verdict": v.verdict,
        "generator": v.generator if v.verdict == AI else None,
        "family": v.family if v.verdict == AI else None,
        "score": v.score,
        "reason": clip(reason, 2000),
        "evidence": evidence,
        "disagreement": v.disagreement,
        "decided_by": v.decided_by,
    }


def _lossy_item(evidence: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [i for i in evidence if i["source"] == "lossy-detector" and i.get("measured")]
    return found[0] if found and found[0]["claim"] in ("ai-generated", "not-detected") else None


def _step_measured(v: _Verdict, evidence: list[dict[str, Any]], forced: bool, onto: float | None) -> None:
    """Rule 1: the lossy detector answers when the fingerprint cannot (``inconclusive``: a calibrated one
    only) or when a verdict on a lossy input was forced (any). ``score`` is read on the model's scale
    (threshold ``onto``; :func:`on_scale`), as ``detection.ai_score`` is."""
    li = _lossy_item(evidence)
    if li is None or not (li.get("calibrated") or forced):
        return
    was = v.verdict
    s, t = li.get("score"), li.get("threshold")
    v.verdict = AI if li["claim"] == "ai-generated" else REAL
    v.generator = v.family = None
    a = None if s is None else (float(s) if onto is None or t is None else on_scale(s, t, onto))
    v.score = None if a is None else round(a if v.verdict == AI else 1.0 - a, 6)
    v.decided_by = "lossy-detector"
    grade = "calibrated" if li.get("calibrated") else "uncalibrated (a hint-grade detector; forced)"
    note = f"lossy detector: score {s} {'>=' if v.verdict == AI else '<'} its {grade} threshold {t}"
    if v.verdict == AI:
        note += "; generator not attributed (fingerprint unreliable)"
    if was in (AI, REAL):
        note += f"; the fingerprint's forced verdict ({was}) is not used: its detection is at chance on lossy input"
    v.notes.append(note)


def on_scale(score: float, threshold: float, onto: float) -> float:
    """``score`` of a detector whose threshold is ``threshold``, mapped piecewise linearly onto a scale whose
    threshold is ``onto``: [0, threshold] -> [0, onto], [threshold, 1] -> [onto, 1]. Monotone, so a score at or
    above its own threshold lands at or above ``onto``."""
    s, t, o = float(score), float(threshold), float(onto)
    if t <= 0.0 or t >= 1.0:
        return o if s >= t else 0.0
    return s / t * o if s < t else o + (s - t) / (1.0 - t) * (1.0 - o)


def _detection(det: dict[str, Any] | None, evidence: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Rule 1: where the lossy detector scored the input, the record's ``detection.ai_score`` is its score on
    the model's scale (:func:`on_scale`: its threshold onto the model's, which ``threshold`` keeps), so one
    threshold reads every record and scores of both detectors rank together (docs/evaluation.md: mixing raw
    scores ranked real JPEG photos above generated PNGs)."""
    if det is None:
        return None
    li = _lossy_item(evidence)
    if li is None or li.get("score") is None or li.get("threshold") is None or det.get("threshold") is None:
        return {**det, "detector": "fingerprint"}
    return {**det, "ai_score": round(on_scale(li["score"], li["threshold"], det["threshold"]), 6),
            "detector": "lossy-detector"}  # fmt: skip


def _step_disagreements(
    measured: str | None, measured_by: str | None, ai_decl: list[dict[str, Any]], capture: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rule 5: what the file declares against what was measured, and the declarations against each other."""
    out = []
    if measured == REAL:
        for i in ai_decl:
            out.append(
                {
                    "between": [i["source"], measured_by],
                    "detail": f"{_what(i)} declares AI-generated content but the {measured_by} says real",
                }
            )
    if measured == AI:
        for i in capture:
            out.append(
                {
                    "between": [i["source"], measured_by],
                    "detail": f"{_what(i)} declares a capture but the {measured_by} says ai-generated",
                }
            )
    if ai_decl and capture:
        out.append(
            {
                "between": sorted({ai_decl[0]["source"], capture[0]["source"]}),
                "detail": f"the declarations contradict each other: {_what(ai_decl[0])} vs {_what(capture[0])}",
            }
        )
    fams = {i["family"] for i in ai_decl if i.get("family")}
    if len(fams) > 1:
        out.append(
            {
                "between": sorted({i["source"] for i in ai_decl if i.get("family")}),
                "detail": f"the declarations name different families: {', '.join(sorted(fams))}",
            }
        )
    return out


def _step_bound_declaration(v: _Verdict, bound_ai: list[dict[str, Any]]) -> dict[str, Any]:
    """Rule 2: the most specific bound AI declaration decides ``ai-generated``; it is returned."""
    chosen = sorted(bound_ai, key=_declared_rank)[0]
    if v.verdict != AI:
        v.score = None
    v.verdict, v.decided_by = AI, chosen["source"]
    v.notes.insert(
        0,
        f"signed {chosen['source'].upper()} manifest ({chosen.get('validation_state') or 'valid'})"
        f" declares {_what(chosen)}",
    )
    return chosen


def _step_unbound_declaration(v: _Verdict, ai_decl: list[dict[str, Any]]) -> dict[str, Any]:
    """Rule 3: the most specific unbound AI declaration raises ``real`` / ``inconclusive``; it is returned."""
    chosen = sorted(ai_decl, key=_declared_rank)[0]
    if v.verdict in (REAL, INCONCLUSIVE):
        v.verdict, v.score, v.decided_by = AI, None, chosen["source"]
        v.generator = v.family = None
        v.notes.insert(0, f"declared by {_what(chosen)}: unsigned metadata, not verified")
    return chosen


def _name_generator(v: _Verdict, chosen: dict[str, Any]) -> None:
    """Rules 2 and 3: the chosen declaration names a missing generator; a differing one is a disagreement
    (rule 5), and replaces the fingerprint's match only when it is bound."""
    c_gen, c_fam = chosen.get("generator"), chosen.get("family")
    gen, fam = v.generator, v.family
    if gen is None and (c_gen or c_fam):
        if fam and c_fam and c_fam != fam:  # the fingerprint named a family alone, the declaration another
            v.disagreement.append(
                {
                    "between": [chosen["source"], "fingerprint"],
                    "detail": f"{_what(chosen)} names the {c_fam} family but the fingerprint's is {fam}",
                }
            )
            if chosen.get("bound"):  # as for a generator: only a bound declaration replaces the fingerprint's
                v.generator, v.family = c_gen, c_fam
            return
        v.generator, v.family = c_gen, c_fam or fam
        if v.decided_by != chosen["source"]:
            v.notes.append(f"generator named by {_what(chosen)}")
    elif gen is not None and (c_gen or c_fam) and (c_fam or c_gen) != (fam or gen) and c_gen != gen:
        v.disagreement.append(
            {
                "between": [chosen["source"], "fingerprint"],
                "detail": f"{_what(chosen)} names {c_gen or c_fam} but the nearest registered"
                f" generator is {gen} ({fam})",
            }
        )
        if chosen.get("bound"):
            v.generator, v.family = c_gen, c_fam


def apply_evidence(result, items: list[dict[str, Any]]):
    """``result`` (an ``attribute.Result`` or a record dict) with the evidence combined in; errors pass through."""
    record = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    if record.get("status", "ok") != "ok":
        return result
    changes = combine(record, items)
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, **changes)
    return record | changes
