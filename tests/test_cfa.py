"""The camera-original gate (``lida_plugin.cfa``): Bayer demosaicing traces make a lossless image
``inconclusive``, originals without them are untouched, and ``--force`` gives the model's verdict."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lida_exporters.camera import demosaic, noisy
from lida_plugin import cfa
from lida_plugin.fingerprint import extract_crops


def _scene(seed: int, side: int = 256) -> np.ndarray:
    """Smooth content with sensor-like white noise (the same in the three channels: channel-independent noise of
    this strength is what lida_plugin.noisegate reads as added noise): no demosaicing pattern."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
    up = np.asarray(Image.fromarray(small).resize((side, side), Image.BICUBIC), dtype=np.float64)
    return np.clip(np.rint(up + rng.normal(0, 3, up.shape[:2])[..., None]), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["bilinear", "mhc"])
@pytest.mark.parametrize("phase", range(4))
def test_demosaiced_images_score_above_the_threshold_and_originals_below(method, phase):
    px = _scene(phase)
    assert cfa.cfa_score(extract_crops(px, 64, 16, 8)) < cfa.CFA_THRESHOLD / 2
    assert cfa.camera_reasons(px) == []
    cam = demosaic(px, method, phase)
    s = cfa.cfa_score(extract_crops(cam, 64, 16, 8))
    assert s >= 2 * cfa.CFA_THRESHOLD
    (reason,) = cfa.camera_reasons(cam)
    assert "camera demosaicing traces" in reason and f"{s:.2f}" in reason


def test_the_traces_survive_noise_and_vanish_with_downscaling():
    cam = demosaic(_scene(7), "mhc", 2)
    assert cfa.camera_reasons(noisy(cam, 1.0, 0))
    half = np.asarray(Image.fromarray(cam).resize((192, 192), Image.BICUBIC))
    assert cfa.camera_reasons(half) == []


def test_the_threshold_grows_with_fewer_crops_and_tiny_images_are_not_judged():
    assert cfa.threshold(16) == cfa.CFA_THRESHOLD == cfa.threshold(64)
    assert cfa.threshold(4) == pytest.approx(2 * cfa.CFA_THRESHOLD)
    assert cfa.threshold(2) > cfa.threshold(4) > cfa.threshold(8) > cfa.threshold(16)
    cam = demosaic(_scene(3, 64), "bilinear", 0)  # room for one crop: too few to tell
    assert cfa.cfa_score(extract_crops(cam, 64, 16, 8)) > cfa.threshold(1)  # the pattern is there ...
    assert cfa.camera_reasons(cam) == []  # ... but one crop is not judged
    assert cfa.camera_reasons(np.zeros((40, 500, 3), np.uint8)) == []
    assert cfa.cfa_score(np.zeros((0, 3, 64, 64), np.uint8)) == 0.0
    assert cfa.cfa_score(np.full((4, 3, 64, 64), 128, np.uint8)) == pytest.approx(0.0)  # flat: no pattern


def _png(px: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG")
    return buf.getvalue()


def _tiff(px: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="TIFF")  # uncompressed: a reliable, lossless container
    return buf.getvalue()


def test_a_camera_original_is_inconclusive_and_forced_gets_the_models_verdict(isolated_env, tiny_model):
    from lida_plugin.attribute import Attributor
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import open_stack

    enc = Encoder(str(tiny_model))
    plain = Attributor(enc, open_stack(enc, None, use_default=False))
    forced = Attributor(enc, open_stack(enc, None, use_default=False), force=True)
    px = _scene(11)
    cam = demosaic(px, "mhc", 1)
    for encode in (_png, _tiff):
        (orig, camera) = plain.finish([plain.prepare("orig", encode(px)), plain.prepare("cam", encode(cam))])
        assert orig.reliability["reliable"] and orig.verdict != "inconclusive"
        assert camera.verdict == "inconclusive" and not camera.reliability["reliable"]
        assert any("camera demosaicing traces" in r for r in camera.reliability["reasons"])
        assert "camera demosaicing traces" in camera.reason
        (f,) = forced.finish([forced.prepare("cam", encode(cam))])
        assert f.verdict in ("real", "ai-generated") and f.reliability["forced"]
        assert not any(e.get("source") == "lossy-detector" for e in f.evidence)  # not a lossy codec
