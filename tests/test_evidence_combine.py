"""The verdict rule (lida_plugin/evidence/combine.py, docs/provenance.md) on hand-made evidence items."""

from __future__ import annotations

import json

import jsonschema
import pytest
from provenance_helpers import REPO, RESULT_SCHEMA

from lida_plugin.evidence.combine import apply_evidence, combine
from lida_plugin.evidence.items import make_item

ITEM_SCHEMA = json.loads((REPO / "lida_plugin/schemas/evidence-item.schema.json").read_text())


def record(verdict="real", generator=None, family=None, reliable=True, ai_score=0.2, forced=False):
    return {
        "path": "x.png",
        "status": "ok",
        "verdict": verdict,
        "generator": generator,
        "family": family,
        "score": None if verdict == "inconclusive" else (ai_score if verdict == "ai-generated" else 1 - ai_score),
        "reason": "fingerprint says so",
        "detection": {"ai_score": ai_score, "threshold": 0.5},
        "neighbors": [],
        "reliability": {"reliable": reliable, "forced": forced, "reasons": [], "notes": []},
        "model_id": "m",
        "store_id": "s",
    }


SIGNED_AI = make_item(
    "c2pa",
    "ai-generated",
    field="c2pa.actions/digitalSourceType (embedded)",
    value="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
    name="Adobe Firefly",
    family="adobe-firefly",
    bound=True,
    validation_state="Valid",
)
INVALID_AI = SIGNED_AI | {"bound": False, "validation_state": "Invalid"}
PNG_SDXL = make_item(
    "png-text",
    "ai-generated",
    field="PNG tEXt parameters Model",
    name="sd_xl_base_1.0",
    generator="sdxl-1.0",
    family="stable-diffusion-xl",
)
XMP_CAPTURE = make_item("xmp", "camera-capture", field="XMP Iptc4xmpExt:DigitalSourceType", value="digitalCapture")
SIGNED_CAPTURE = make_item("c2pa", "camera-capture", field="stds.exif (embedded)", name="Google Pixel 5", bound=True)
EDITED = make_item("exif", "edited", field="EXIF Software", name="Adobe Photoshop 25.1")


def lossy(claim, calibrated, score=0.91):
    return make_item(
        "lossy-detector",
        claim,
        field="pixels: lossy detector",
        measured=True,
        score=score,
        threshold=0.6,
        calibrated=calibrated,
        auc=0.9,
    )


def full(rec, items):
    out = rec | combine(rec, items)
    jsonschema.validate(out, RESULT_SCHEMA)
    for i in out["evidence"]:
        jsonschema.validate(i, ITEM_SCHEMA)
    return out


@pytest.mark.parametrize("verdict", ["real", "inconclusive", "ai-generated"])
def test_signed_c2pa_ai_decides_whatever_the_pixels_say(verdict):
    out = full(
        record(
            verdict,
            "sd-1.5" if verdict == "ai-generated" else None,
            "stable-diffusion-1" if verdict == "ai-generated" else None,
            reliable=verdict != "inconclusive",
        ),
        [SIGNED_AI],
    )
    assert out["verdict"] == "ai-generated" and out["decided_by"] == "c2pa"
    assert out["family"] == "adobe-firefly"  # a bound declaration names the generator
    assert out["reason"].startswith("signed C2PA manifest (Valid) declares")
    assert bool(out["disagreement"]) == (verdict != "inconclusive")  # real: AI vs real; ai: firefly vs sd-1.5
    if verdict == "real":
        assert out["score"] is None


def test_unsigned_claim_raises_real_and_names_the_generator():
    out = full(record("real"), [PNG_SDXL])
    assert (out["verdict"], out["generator"], out["family"], out["decided_by"]) == (
        "ai-generated",
        "sdxl-1.0",
        "stable-diffusion-xl",
        "png-text",
    )
    assert out["score"] is None and "unsigned metadata, not verified" in out["reason"]
    assert out["disagreement"][0]["between"] == ["png-text", "fingerprint"]


def test_jpeg_with_declared_source_gets_attribution_from_it():
    out = full(record("inconclusive", reliable=False), [PNG_SDXL | {"source": "xmp", "field": "XMP x"}])
    assert (out["verdict"], out["generator"], out["decided_by"]) == ("ai-generated", "sdxl-1.0", "xmp")
    assert out["disagreement"] == []  # nothing measured to disagree with


def test_invalid_c2pa_counts_as_unsigned_text():
    out = full(record("real"), [INVALID_AI])
    assert out["verdict"] == "ai-generated" and out["decided_by"] == "c2pa"
    assert "unsigned metadata" in out["reason"] and out["evidence"][1]["bound"] is False


def test_unsigned_claim_names_but_never_replaces_a_matched_generator():
    out = full(record("ai-generated", "flux-1", "flux", ai_score=0.9), [PNG_SDXL])
    assert (out["generator"], out["family"], out["decided_by"]) == ("flux-1", "flux", "fingerprint")
    assert "sdxl-1.0" in out["disagreement"][0]["detail"]
    named = full(record("ai-generated", None, None, ai_score=0.9), [PNG_SDXL])  # open set: the declaration names it
    assert (named["generator"], named["decided_by"]) == ("sdxl-1.0", "fingerprint")
    assert "generator named by PNG tEXt parameters Model" in named["reason"]


@pytest.mark.parametrize("claim_item", [XMP_CAPTURE, SIGNED_CAPTURE, EDITED])
def test_capture_or_edit_claims_never_clear(claim_item):
    out = full(record("ai-generated", "sd-1.5", "stable-diffusion-1", ai_score=0.9), [claim_item])
    assert (out["verdict"], out["generator"], out["decided_by"]) == ("ai-generated", "sd-1.5", "fingerprint")
    assert bool(out["disagreement"]) == (claim_item["claim"] == "camera-capture")
    inc = full(record("inconclusive", reliable=False), [claim_item])
    assert inc["verdict"] == "inconclusive" and inc["decided_by"] is None


def test_nothing_usable_stays_inconclusive_and_fingerprint_item_comes_first():
    out = full(record("inconclusive", reliable=False), [])
    assert out["verdict"] == "inconclusive" and out["generator"] is None and out["disagreement"] == []
    fp = out["evidence"][0]
    assert (fp["source"], fp["claim"], fp["measured"], fp["calibrated"]) == ("fingerprint", "unknown", True, False)


def test_lossy_detector_calibrated_decides_detection_only():
    out = full(record("inconclusive", reliable=False), [lossy("ai-generated", True)])
    assert (out["verdict"], out["generator"], out["decided_by"], out["score"]) == (
        "ai-generated",
        None,
        "lossy-detector",
        0.8875,  # 0.91 on the model scale (lossy threshold 0.6 onto 0.5)
    )
    assert "generator not attributed" in out["reason"]
    real = full(record("inconclusive", reliable=False), [lossy("not-detected", True, score=0.1)])
    assert (real["verdict"], real["score"]) == ("real", 0.916667)  # 1 - 0.1 / 0.6 * 0.5
    hint = full(record("inconclusive", reliable=False), [lossy("ai-generated", False)])
    assert hint["verdict"] == "inconclusive" and hint["decided_by"] is None  # a hint only
    # a reliable fingerprint is not overridden by the lossy detector
    assert full(record("real"), [lossy("ai-generated", True)])["verdict"] == "real"


@pytest.mark.parametrize("fingerprint_says", ["real", "ai-generated"])
@pytest.mark.parametrize("calibrated", [True, False])
def test_a_forced_verdict_on_lossy_input_is_the_lossy_detectors(fingerprint_says, calibrated):
    # --force on a JPEG: the fingerprint's detection is at chance there, so the lossy detector decides
    rec = record(fingerprint_says, generator="sd-1.5" if fingerprint_says == "ai-generated" else None,
                 family="stable-diffusion-1", reliable=False, forced=True, ai_score=0.3)  # fmt: skip
    out = full(rec, [lossy("ai-generated", calibrated, score=0.91)])
    assert (out["verdict"], out["generator"], out["family"], out["decided_by"], out["score"]) == (
        "ai-generated", None, None, "lossy-detector", 0.8875)  # fmt: skip
    assert f"fingerprint's forced verdict ({fingerprint_says}) is not used" in out["reason"]
    assert ("uncalibrated" in out["reason"]) is not calibrated
    # on the model's scale: the lossy threshold 0.6 falls on the model's 0.5, 0.91 -> 0.5 + 0.31 / 0.4 * 0.5
    assert out["detection"] == {"ai_score": 0.8875, "threshold": 0.5, "detector": "lossy-detector"}
    fp = out["evidence"][0]  # the fingerprint's own score is kept in its item
    assert (fp["source"], fp["score"], fp["threshold"], fp["calibrated"]) == ("fingerprint", 0.3, 0.5, False)
    real = full(rec, [lossy("not-detected", calibrated, score=0.2)])
    assert (real["verdict"], real["score"], real["generator"]) == ("real", 0.833333, None)


def test_detection_names_its_detector_and_a_forced_verdict_without_a_lossy_score_stays():
    # an unreliable input the lossy detector does not score (e.g. a palette PNG): the forced fingerprint stands
    forced = full(record("ai-generated", generator="sd-1.5", reliable=False, forced=True, ai_score=0.7), [])
    assert (forced["verdict"], forced["generator"], forced["decided_by"]) == ("ai-generated", "sd-1.5", "fingerprint")
    assert forced["detection"] == {"ai_score": 0.7, "threshold": 0.5, "detector": "fingerprint"}
    # not forced: the verdict stays inconclusive, and detection carries the lossy detector's hint
    hint = full(record("inconclusive", reliable=False, ai_score=0.3), [lossy("not-detected", False, score=0.2)])
    assert hint["verdict"] == "inconclusive"
    assert hint["detection"] == {"ai_score": round(0.2 / 0.6 * 0.5, 6), "threshold": 0.5, "detector": "lossy-detector"}


@pytest.mark.parametrize("threshold, onto", [(0.9998, 0.456), (0.3, 0.7), (0.5, 0.5)])
def test_on_scale_is_monotone_and_puts_the_threshold_on_the_models(threshold, onto):
    from lida_plugin.evidence.combine import on_scale

    xs = [i / 1000 for i in range(1001)] + [threshold]
    ys = [on_scale(x, threshold, onto) for x in sorted(xs)]
    assert all(a <= b for a, b in zip(ys, ys[1:], strict=False)) and ys[0] == 0.0 and ys[-1] == pytest.approx(1.0)
    assert on_scale(threshold, threshold, onto) == pytest.approx(onto)
    assert all((on_scale(x, threshold, onto) >= onto) == (x >= threshold) for x in xs)


def test_lossy_detector_real_plus_declaration_reports_the_conflict():
    out = full(record("inconclusive", reliable=False), [lossy("not-detected", True, score=0.1), PNG_SDXL])
    assert (out["verdict"], out["generator"], out["decided_by"]) == ("ai-generated", "sdxl-1.0", "png-text")
    assert out["disagreement"][0]["between"] == ["png-text", "lossy-detector"]


def test_declarations_contradicting_each_other_are_reported():
    out = full(record("inconclusive", reliable=False), [PNG_SDXL, XMP_CAPTURE])
    assert out["verdict"] == "ai-generated"
    assert any("contradict" in d["detail"] for d in out["disagreement"])


def test_apply_evidence_keeps_error_records_and_works_on_dicts():
    err = {"path": "x", "status": "error", "error": "bad", "verdict": None}
    assert apply_evidence(err, [SIGNED_AI]) is err
    out = apply_evidence(record("real"), [SIGNED_AI])
    assert out["verdict"] == "ai-generated" and out["evidence"][0]["source"] == "fingerprint"


def test_published_item_schema_is_the_one_embedded_in_the_record_and_assertion_schemas():
    from provenance_helpers import ASSERTION_SCHEMA

    published = {k: v for k, v in ITEM_SCHEMA.items() if k != "$schema"}
    assert RESULT_SCHEMA["$defs"]["evidence-item"] == published
    assert ASSERTION_SCHEMA["$defs"]["evidence-item"] == published
