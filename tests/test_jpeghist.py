"""The JPEG-history gate (``lida_plugin.jpeghist``): lossless pixels that were a JPEG are ``inconclusive`` and get
the lossy detector's evidence, as a JPEG does; pixels that never were keep the fingerprint's verdict."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lida_plugin import jpeghist
from lida_plugin.decode import decode_bytes
from lida_plugin.fingerprint import extract_crops
from lida_plugin.lossy import jpeg_bytes, png_bytes


def _scene(seed: int, side: int = 256) -> np.ndarray:
    """Smooth content with fine white noise: no block structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
    up = np.asarray(Image.fromarray(small).resize((side, side), Image.BICUBIC), dtype=np.float64)
    noise = rng.normal(0, 3, up.shape[:2])[..., None]  # the same in all channels (lida_plugin.noisegate: not added)
    return np.clip(np.rint(up + noise), 0, 255).astype(np.uint8)


def _round_trip(px: np.ndarray, q: int, sub: int = 2) -> np.ndarray:
    return decode_bytes(jpeg_bytes(px, q, sub), "x").pixels


@pytest.mark.parametrize("seed", range(3))
def test_jpeg_round_trips_score_above_the_threshold_and_originals_below(seed):
    px = _scene(seed)
    assert jpeghist.jpeg_history_score(extract_crops(px, 64, 16, 8)) < jpeghist.JPEG_HISTORY_THRESHOLD / 2
    assert jpeghist.jpeg_history_reasons(extract_crops(px, 64, 16, 8)) == []
    for q, sub in ((75, 2), (90, 2), (90, 0), (95, 2), (98, 2)):
        crops = extract_crops(_round_trip(px, q, sub), 64, 16, 8)
        s = jpeghist.jpeg_history_score(crops)
        assert s >= jpeghist.JPEG_HISTORY_THRESHOLD, (q, sub, s)
        (reason,) = jpeghist.jpeg_history_reasons(crops)
        assert "JPEG compression traces" in reason and f"{s:.2f}" in reason


def test_too_few_crops_or_an_odd_shape_is_not_judged():
    jp = _round_trip(_scene(5), 75)
    assert jpeghist.jpeg_history_reasons(extract_crops(jp, 64, 16, 8)[:15]) == []
    assert jpeghist.jpeg_history_score(np.zeros((0, 3, 64, 64), np.uint8)) == 0.0
    assert jpeghist.jpeg_history_score(np.zeros((2, 3, 60, 60), np.uint8)) == 0.0
    flat = np.full((16, 3, 64, 64), 128, np.uint8)  # no coefficient reaches a step: nothing to judge
    assert jpeghist.jpeg_history_score(flat) == 0.0


def test_a_png_that_was_a_jpeg_is_inconclusive_with_the_lossy_detectors_evidence(isolated_env, tiny_model):
    from lida_plugin.attribute import Attributor
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import open_stack

    enc = Encoder(str(tiny_model))
    plain = Attributor(enc, open_stack(enc, None, use_default=False))
    forced = Attributor(enc, open_stack(enc, None, use_default=False), force=True)
    px = _scene(9)
    laundered = png_bytes(_round_trip(px, 85))
    orig, was_jpeg = plain.finish([plain.prepare("orig.png", png_bytes(px)), plain.prepare("was.png", laundered)])
    assert orig.reliability["reliable"] and not any(e["source"] == "lossy-detector" for e in orig.evidence)
    assert was_jpeg.verdict == "inconclusive" and not was_jpeg.reliability["reliable"]
    assert any("JPEG compression traces" in r for r in was_jpeg.reliability["reasons"])
    (item,) = [e for e in was_jpeg.evidence if e["source"] == "lossy-detector"]
    assert "JPEG-compressed pixels in a PNG file" in item["value"]
    (f,) = forced.finish([forced.prepare("was.png", laundered)])
    assert f.verdict in ("real", "ai-generated") and f.reliability["forced"]
    assert f.decided_by == "lossy-detector" and f.detection.get("detector") == "lossy-detector"
