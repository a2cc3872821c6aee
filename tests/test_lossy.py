"""The lossy-input detector: features, the parameter file, the evidence item, training, lida eval."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import synthetic_pixels, write_png
from PIL import Image

from lida_plugin import lossy
from lida_plugin.decode import decode_bytes
from lida_plugin.errors import ModelError
from lida_plugin.residual import spam_features

EVIDENCE_KEYS = {"source", "claim", "generator", "family", "name", "bound", "measured", "field", "value", "score",
                 "threshold", "calibrated"}  # fmt: skip
CLAIMS = {"ai-generated", "composite-ai", "camera-capture", "edited", "not-detected", "unknown"}


def params(calibrated: bool = False, q85=(0.9, 0.6), feature: str = "spam-y", seed: int = 0) -> dict:
    """A hand-made parameter file (random weights) with the given q85 AUCs (held-out, leave-family-out)."""
    dim = {"spam-y": 686, "spam-rgb": 2058}[feature]
    rng = np.random.default_rng(seed)
    auc = {b: {"heldout": 0.8, "leave_family_out": 0.6} for b in ("q95", "q75", "all")}
    auc["q85"] = {"heldout": q85[0], "leave_family_out": q85[1], "tpr_at_threshold": 0.95}
    return {
        "format": "lida-lossy-detector",
        "version": 1,
        "feature": feature,
        "T": 3,
        "max_side": 256,
        "dim": dim,
        "parameters": {"mean": [0.01] * dim, "scale": [0.02] * dim, "w": rng.normal(0, 0.05, dim).tolist(), "b": 0.1},
        "threshold": 0.5,
        "fpr": 0.05,
        "calibrated": calibrated,
        "auc": auc,
        "recipe": {"seed": 0},
        "recipe_hash": "test",
        "leave_real_set_out": {"pooled_fpr": 0.06},
    }


def write(tmp_path, d: dict, name: str = "det.json"):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def jpeg(px: np.ndarray, q: int = 85, ss: int = 2) -> bytes:
    return lossy.jpeg_bytes(px, q, ss)


# -- features ------------------------------------------------------------------------------------
def test_spam_y_of_a_gray_image_is_spam_of_any_channel():
    g = synthetic_pixels("real", 1, 64)[..., 0]
    gray = np.repeat(g[..., None], 3, axis=2)
    assert np.array_equal(lossy.luma(gray), g)
    assert np.array_equal(lossy.spam_y(gray), spam_features(gray)[:686])


def test_colour_features_read_jpegs_channels():
    px = synthetic_pixels("gen-a", 3, 64)
    ycc = lossy.ycbcr(px)
    pil = np.asarray(Image.fromarray(px).convert("YCbCr")).transpose(2, 0, 1).astype(int)
    assert np.abs(ycc.astype(int) - pil).max() <= 1  # Pillow's conversion, to rounding
    assert np.abs(ycc[0].astype(int) - lossy.luma(px)).max() <= 1
    white = np.full((8, 8, 3), 255, np.uint8)
    assert lossy.ycbcr(white)[:, 0, 0].tolist() == [255, 128, 128]  # libjpeg's fixed point: exact at the ends
    f = lossy.features(px, "spam-ycc")
    assert f.shape == (2058,)
    assert np.array_equal(lossy.features(px, "spam-yccd")[:2058], f)
    assert np.array_equal(lossy.half_scale(np.array([[0, 1], [2, 3]], np.uint8)), [[2]])  # (6 + 2) // 4
    for name in lossy.FEATURES:  # every feature runs on a gray image and an odd size
        assert np.all(np.isfinite(lossy.features(px[:37, :51], name)))


def test_centre_crop_keeps_the_8px_grid_and_small_images():
    px = np.arange(300 * 200 * 3, dtype=np.uint32).reshape(300, 200, 3)
    c = lossy.centre_crop(px, 64)
    assert c.shape == (64, 64, 3)
    y0, x0 = divmod(int(c[0, 0, 0]) // 3, 200)
    assert y0 % 8 == 0 and x0 % 8 == 0 and (y0, x0) == (112, 64)
    assert lossy.centre_crop(px, 512).shape == px.shape and lossy.centre_crop(px, 0) is px
    with pytest.raises(ValueError, match="unknown lossy-detector feature"):
        lossy.features(px.astype(np.uint8), "dct")


def test_degradations_go_through_the_runtime_decoder():
    px = synthetic_pixels("real", 3, 96)
    d = lossy.Degradation(quality=85, subsampling=0).apply(px, "x")
    assert d.format == "JPEG" and not d.reliable and d.jpeg_quality == 85
    r = lossy.Degradation(resize=0.5).apply(px, "x")
    assert r.format == "PNG" and r.pixels.shape == (48, 48, 3)
    assert lossy.Degradation(resize=0.5, quality=75).describe() == "resize-0.5-bicubic+jpeg-q75-420"
    assert [lossy.quality_band(q) for q in (100, 91, 89, 80, 79, 40, None)] == ["q95", "q95", "q85", "q85", "q75",
                                                                                "q75", None]  # fmt: skip


# -- the parameter file ----------------------------------------------------------------------------
def test_parameter_file_round_trip_and_score(tmp_path):
    d = params()
    det = lossy.load_detector(write(tmp_path, d))
    px = synthetic_pixels("gen-a", 5, 128)
    f = lossy.spam_y(px)
    z = (f.astype(np.float64) - 0.01) / 0.02
    expect = 1 / (1 + np.exp(-(z @ np.asarray(d["parameters"]["w"]) + 0.1)))
    assert det.score(px) == pytest.approx(expect, rel=1e-12)
    assert det.threshold == 0.5 and det.calibrated is False and det.auc["q85"]["heldout"] == 0.9


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d["parameters"]["w"].pop(), "lengths differ"),
        (lambda d: d["parameters"]["scale"].__setitem__(0, 0.0), "scale"),
        (lambda d: d.update(threshold=1.5), "threshold"),
        (lambda d: d.update(feature="dct"), "not one this runtime computes"),
        (lambda d: d.update(calibrated=True), "leave-family-out AUC at q85 0.6 < 0.85"),  # q85 AUCs 0.9 / 0.6
        (
            lambda d: d.update(
                calibrated=True,
                auc={"q85": {"heldout": 0.9, "leave_family_out": 0.9, "tpr_at_threshold": 0.95}},
                leave_real_set_out={"pooled_fpr": 0.3},
            ),
            "unseen real set flagged 0.3 > 0.1",
        ),
        (
            lambda d: d.update(
                calibrated=True,
                auc={"q85": {"heldout": 0.9, "leave_family_out": 0.9, "tpr_at_threshold": 0.4}},
                leave_real_set_out={"pooled_fpr": 0.05},
            ),
            "TPR at the threshold at q85 0.4",
        ),
        (lambda d: d.pop("auc"), "auc"),
    ],
)
def test_bad_parameter_files_are_refused_naming_the_file(tmp_path, mutate, match):
    d = copy.deepcopy(params())
    mutate(d)
    p = write(tmp_path, d, f"bad-{abs(hash(match))}.json")
    with pytest.raises(ModelError, match=match) as e:
        lossy.load_detector(p)
    assert str(p) in str(e.value)


def test_unreadable_parameter_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        lossy.load_detector(tmp_path / "missing.json")
    p = tmp_path / "junk.json"
    p.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        lossy.load_detector(p)


def test_published_schemas_accept_the_bundled_file_and_the_item():
    jsonschema = pytest.importorskip("jsonschema")
    schemas = lossy.SCHEMA_PATH.parent
    jsonschema.validate(json.loads(lossy.DEFAULT_PATH.read_text()), json.loads(lossy.SCHEMA_PATH.read_text()))
    item = lossy.lossy_evidence(decode_bytes(jpeg(synthetic_pixels("gen-a", 1, 128), 70), "a.jpg"))
    jsonschema.validate(item, json.loads((schemas / "evidence-item.schema.json").read_text()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**params(), "threshold": 2}, json.loads(lossy.SCHEMA_PATH.read_text()))


def test_bundled_detector_loads_and_follows_its_rule():
    det = lossy.load_detector()
    assert det.feature in lossy.FEATURES and len(det.w) == det.raw["dim"]
    assert det.calibrated == (lossy.verdict_misses(det.raw) == [])
    for band in lossy.BANDS:
        assert 0.0 <= det.auc[band]["heldout"] <= 1.0 and 0.0 <= det.auc[band]["leave_family_out"] <= 1.0
    assert 0.0 < det.threshold < 1.0 and det.fpr == 0.05
    assert det.raw["command"].startswith("lida-train lossy")


# -- the evidence item -----------------------------------------------------------------------------
def check_item(item: dict) -> None:
    assert set(item) - {"auc"} == EVIDENCE_KEYS
    assert item["source"] == "lossy-detector" and item["claim"] in CLAIMS
    assert item["measured"] is True and item["bound"] is False
    assert item["generator"] is None and item["family"] is None and item["name"] is None
    assert 0.0 <= item["score"] <= 1.0 and 0.0 <= item["threshold"] <= 1.0
    assert isinstance(item["calibrated"], bool) and len(item["value"]) <= 200
    assert item["claim"] == ("ai-generated" if item["score"] >= item["threshold"] else "not-detected")
    json.dumps(item)


def test_lossy_evidence_on_a_generated_jpeg_with_the_bundled_detector():
    px = synthetic_pixels("gen-b", 9, 256)
    dec = decode_bytes(jpeg(px, 85), "flux.jpg")
    item = lossy.lossy_evidence(dec)
    check_item(item)
    det = lossy.load_detector()
    assert item["calibrated"] == det.calibrated and item["threshold"] == det.threshold
    assert item["auc"] == pytest.approx(det.auc["q85"]["heldout"], abs=1e-4)
    assert "band q85" in item["value"]
    assert item["score"] == pytest.approx(det.score(dec.pixels), abs=1e-6)


def test_calibrated_false_is_honoured(tmp_path):
    px = synthetic_pixels("gen-c", 2, 128)
    dec = decode_bytes(jpeg(px, 95, 0), "x.jpg")
    hint = lossy.lossy_evidence(dec, lossy.load_detector(write(tmp_path, params(False), "hint.json")))
    check_item(hint)
    assert hint["calibrated"] is False and "hint only" in hint["value"] and hint["auc"] == 0.8  # q95 band
    verdict = lossy.lossy_evidence(dec, lossy.load_detector(write(tmp_path, params(True, (0.9, 0.88)), "v.json")))
    check_item(verdict)
    assert verdict["calibrated"] is True and "hint" not in verdict["value"]
    assert verdict["score"] == hint["score"]  # same weights: only the flag differs


def test_the_detector_applies_to_lossy_inputs_only(tmp_path):
    det = lossy.load_detector(write(tmp_path, params()))
    px = synthetic_pixels("real", 4, 96)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG")
    assert lossy.lossy_evidence(decode_bytes(buf.getvalue(), "a.png"), det) is None  # fingerprint usable
    buf = io.BytesIO()
    Image.fromarray(px).convert("P").save(buf, format="PNG")
    pal = decode_bytes(buf.getvalue(), "p.png")
    assert not pal.reliable and lossy.lossy_evidence(pal, det) is None  # unreliable, but not what it was trained on
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="WEBP", quality=80)
    item = lossy.lossy_evidence(decode_bytes(buf.getvalue(), "w.webp"), det)
    check_item(item)
    assert "WEBP was not in the training set" in item["value"] and item["auc"] == 0.8  # the pooled "all" AUC


def test_runtime_modules_do_not_import_torch():
    code = ("import sys, lida_plugin.lossy, lida_plugin.residual, lida_plugin.evaluate.lossy; "
            "lida_plugin.lossy.load_detector(); print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- training and lida eval ------------------------------------------------------------------------
@pytest.fixture
def tiny_corpus(tmp_path):
    """Real: noisy synthetic photos; generated: the same kind of content, smoothed (a different residual)."""
    root = tmp_path / "data"
    for i in range(12):
        write_png(root / "real" / "set" / f"r{i}.png", "real", 500 + i, size=96)
    for fam in ("fa", "fb"):
        for i in range(8):
            px = synthetic_pixels("real", 600 + i + (50 if fam == "fb" else 0), 96)
            im = Image.fromarray(px).resize((48, 48), Image.BILINEAR).resize((96, 96), Image.BICUBIC)
            p = root / "generated" / f"gen-{fam}" / f"g{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            im.save(p)
    (root / "manifest.tsv").write_text(
        "path\tkind\tgenerator\tfamily\n" + "".join(f"x\tgenerated\tgen-{f}\t{f}\n" for f in ("fa", "fb"))
    )
    return root


def test_training_degradations_are_seeded():
    pytest.importorskip("torch")
    from lida_exporters.lossy import LossyRecipe, training_degradation

    r = LossyRecipe(seed=3)
    a = [training_degradation(r, "real/x.png", c) for c in range(50)]
    assert a == [training_degradation(r, "real/x.png", c) for c in range(50)]
    assert a != [training_degradation(LossyRecipe(seed=4), "real/x.png", c) for c in range(50)]
    qs = [d.quality for d in a if d.quality is not None]
    assert qs and min(qs) >= 60 and max(qs) <= 98 and {d.subsampling for d in a} == {0, 2}


def test_train_write_load_and_eval_on_a_tiny_corpus(tiny_corpus, tmp_path):
    pytest.importorskip("torch")
    from lida_exporters.lossy import LossyRecipe, load_images, train, write_detector
    from lida_plugin.evaluate.corpus import load_corpus
    from lida_plugin.evaluate.lossy import lossy_detection, markdown

    r = LossyRecipe(feature="spam-y", max_side=0, copies=2, lofo_min_images=3)
    images = load_images(tiny_corpus)
    d = train(r, tiny_corpus, cache_dir=None, images=images)
    assert d["leave_family_out"]["families"] == {"fa": 4, "fb": 4}
    assert d["auc"]["q85"]["heldout"] > 0.9  # smoothing is easy to see, even after JPEG
    assert d["calibrated"] == (d["verdict_misses"] == [])
    assert d["leave_real_set_out"] is None and any("unseen real set" in m for m in d["verdict_misses"])
    assert d["threshold_from"] == "heldout"  # one real set: nothing to cross-fit on
    out = write_detector(d, tmp_path / "det.json")
    det = lossy.load_detector(out)
    assert det.raw["recipe_hash"] == r.hash()
    # the threshold holds its FPR on the calibration copies, and lida eval reproduces the training AUCs
    res = lossy_detection(load_corpus(tiny_corpus), det)
    for band in lossy.BANDS:
        assert res["bands"][band]["auc"] == pytest.approx(d["auc"][band]["heldout"], abs=1e-6)
    text = "\n".join(markdown(res))
    assert "| q85 |" in text and ("hint only" in text) != d["calibrated"]
    # the same recipe gives the same file
    assert train(r, tiny_corpus, cache_dir=None, images=images)["parameters"] == d["parameters"]


def test_forced_runtime_measures_the_records_lida_attribute_writes(tiny_corpus):
    from lida_plugin.evaluate.corpus import load_corpus
    from lida_plugin.evaluate.lossy import ARRIVALS, forced_markdown, forced_runtime

    res = forced_runtime(load_corpus(tiny_corpus), quality=85)
    assert len(res["arrivals"]) == len(ARRIVALS)
    assert all(a["n_real"] == 6 and a["n_generated"] == 8 for a in res["arrivals"].values())  # held-out halves
    rates = res["rates"]
    assert rates["real jpeg"]["decided_by"] == ["lossy-detector"] == rates["generated jpeg"]["decided_by"]
    assert rates["real png"]["decided_by"] == ["fingerprint"]
    assert all(r["ai-generated"] + r["real"] == pytest.approx(1.0) for r in rates.values())  # forced: no inconclusive
    assert "| jpeg | png |" in "\n".join(forced_markdown(res))


def test_leave_real_set_out_scores_each_set_with_a_detector_that_never_saw_it(tiny_corpus):
    pytest.importorskip("torch")
    from lida_exporters.lossy import Experiment, FeatureCache, LossyRecipe, load_images

    r = LossyRecipe(feature="spam-y", max_side=0, copies=1)
    one = Experiment(load_images(tiny_corpus), r, FeatureCache(None, [("spam-y", 3, 0)]))
    assert one.leave_real_set_out() is None  # one real set: nothing left to calibrate on
    for i in range(6):
        write_png(tiny_corpus / "real" / "other" / f"o{i}.png", "real", 900 + i, size=96)
    ex = Experiment(load_images(tiny_corpus), r, FeatureCache(None, [("spam-y", 3, 0)]))
    res = ex.leave_real_set_out()
    assert set(res["per_set"]) == {"set", "other"}
    assert res["per_set"]["other"]["n"] == 6 * 2 and res["per_set"]["set"]["n"] == 12 * 2  # both halves, q85 x 2
    assert all(0.0 <= v["fpr"] <= 1.0 and 0.0 <= v["auc"] <= 1.0 for v in res["per_set"].values())
    assert res["max_fpr"] == max(v["fpr"] for v in res["per_set"].values())
