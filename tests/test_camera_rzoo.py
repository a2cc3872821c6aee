"""Training-copy generators of the detection stage: camera processing (``lida_exporters.camera``) and the
random-decoder zoo (``lida_exporters.rzoo``), and how ``spam_model.detection_fit_set`` adds them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import write_png, write_two_generator_corpus

pytest.importorskip("torch")
from lida_exporters import camera as C  # noqa: E402
from lida_exporters import rzoo  # noqa: E402
from lida_exporters import spam_model as sm  # noqa: E402


def _photo(seed: int = 0, side: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    base = np.stack([80 + xx, 60 + yy, 100 + (xx + yy) // 2], -1).astype(np.float64)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("phase", range(4))
def test_bilinear_demosaic_keeps_the_samples_and_averages_green_neighbours(phase):
    px = _photo(phase)
    out = C.demosaic(px, "bilinear", phase)
    r, g, b = C.cfa_masks(*px.shape[:2], phase)
    assert (r.sum(), g.sum(), b.sum()) == (32 * 32, 2 * 32 * 32, 32 * 32)
    assert np.array_equal(out[..., 0][r], px[..., 0][r]) and np.array_equal(out[..., 1][g], px[..., 1][g])
    assert np.array_equal(out[..., 2][b], px[..., 2][b])
    g = px[..., 1].astype(np.float64)  # at inner red sites green is its 4 neighbours' mean, rounded
    want = np.rint((g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]) / 4)
    inner = r[1:-1, 1:-1]
    assert np.array_equal(out[1:-1, 1:-1, 1][inner], want[inner])


def test_mhc_and_opencv_demosaicing_are_close_to_a_smooth_photo():
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = np.stack([60 + 2 * xx, 50 + yy, 90 + xx], -1).astype(np.uint8)  # a linear ramp per channel
    for method in ("mhc", "vng", "ea", "bilinear"):
        for phase in range(4):
            out = C.demosaic(smooth, method, phase).astype(int)
            assert np.abs(out - smooth)[4:-4, 4:-4].max() <= 2, (method, phase)
    with pytest.raises(ValueError, match="unknown demosaicing method"):
        C.demosaic(smooth, "ahd")


def test_camera_plan_is_seeded_and_every_copy_does_something():
    plan = C.camera_plan(range(40), 2, seed=3)
    assert plan == C.camera_plan(range(40), 2, seed=3) and len(plan) == 80
    assert plan != C.camera_plan(range(40), 2, seed=4)
    assert all(op.describe() for _, op in plan)
    px = _photo(1)
    for _, op in plan[:6]:
        out = op.apply(px)
        assert out.shape == px.shape and out.dtype == np.uint8 and not np.array_equal(out, px)
        assert np.array_equal(out, op.apply(px))  # the noise is seeded too


def test_unsharp_mask_matches_its_formula_on_a_step():
    step = np.zeros((32, 32, 3), np.uint8)
    step[:, 16:] = 200
    out = C.unsharp(step, 1.0, 1.0).astype(int)
    assert out[16, 15, 0] == 0 and out[16, 16, 0] == 255  # over- and undershoot, clipped
    assert out[16, 2, 0] == 0 and out[16, 29, 0] == 200  # flat far from the edge


def test_random_decoders_are_seeded_distinct_and_keep_the_content(tmp_path):
    specs = rzoo.draw_specs(6, seed=1)
    assert specs == rzoo.draw_specs(6, seed=1) and len({s.name for s in specs}) == 6
    photo = np.repeat(np.repeat(_photo(2, 64), 4, 0), 4, 1)  # 256x256
    outs = [rzoo.apply(s, [photo])[0] for s in specs[:3]]
    assert all(o.shape == photo.shape and o.dtype == np.uint8 for o in outs)
    assert np.array_equal(outs[0], rzoo.apply(specs[0], [photo])[0])
    assert not np.array_equal(outs[0], outs[1])
    for o in outs:  # content kept: far closer to the photo than to another photo
        assert np.abs(o.astype(int) - photo).mean() < 12
    images, names = rzoo.cached([photo, photo[::-1].copy()], ["a", "b"], 3, 2, 0, tmp_path)
    again, names2 = rzoo.cached([photo, photo[::-1].copy()], ["a", "b"], 3, 2, 0, tmp_path)
    assert len(images) == 6 and names == names2
    assert all(np.array_equal(a, b) for a, b in zip(images, again, strict=True))
    assert rzoo.centre(np.zeros((100, 300, 3), np.uint8)) is None
    with pytest.raises(ValueError, match="at least 256"):
        rzoo.make([np.zeros((100, 100, 3), np.uint8)], 2, 1)


def test_detection_fit_set_adds_copies_in_the_fit_of_their_items(tmp_path):
    from lida_plugin.evaluate.corpus import load_corpus

    root = tmp_path / "data"
    for i in range(6):
        write_png(root / "real" / "set" / f"r{i}.png", "real", 300 + i, size=96)
        write_png(root / "generated" / "gen-a" / f"g{i}.png", "gen-a", 400 + i, size=96)
    items = load_corpus(root)
    r = replace(sm.VERSION1, crop=32, crop_count=4, colour=False, det_resize_copies=1, det_camera_copies=1)
    _, feats, counts = sm.corpus_features(items, r, None, progress=False)
    train = np.array([e.split == "train" for e in items])
    gen = np.array([e.kind == "generated" for e in items])
    fit = train & ~(gen & (np.arange(len(items)) % 2 == 0))  # some generated train items left out
    f, c, g, inside, floors, source = sm.detection_fit_set(items, feats, counts, fit, r, None, progress=False)
    assert floors is None  # a version-1 head reads no noise floor
    n, k = len(items), int(train.sum())
    assert len(c) == len(g) == len(inside) == n + 2 * k and f.shape[0] == sum(c)
    src = np.flatnonzero(train)
    assert np.array_equal(inside[:n], fit) and np.array_equal(inside[n : n + k], fit[src])
    assert np.array_equal(inside[n + k :], fit[src]) and np.array_equal(g[n + k :], gen[src])
    assert list(source) == ["item"] * n + ["resized"] * k + ["camera"] * k
    plain = replace(sm.VERSION1, crop=32, crop_count=4, colour=False, det_resize_copies=0)
    f0, c0, *_ = sm.detection_fit_set(items, feats, counts, fit, plain, None, progress=False)
    assert np.array_equal(f0, feats) and c0 == list(counts)
    # a head that reads the noise floor gets one per image and copy: the items' as given, the copies' computed
    noisy = replace(sm.VERSION1, crop=32, crop_count=4, colour=False, det_resize_copies=1, head_noise=True)
    crops, _, _ = sm.corpus_features(items, noisy, None, progress=False)
    mine = sm.image_noise_floors(crops, counts)
    nf = sm.detection_fit_set(items, feats, counts, fit, noisy, None, progress=False, noise=mine).noise
    assert len(nf) == n + k and np.array_equal(nf[:n], mine) and np.isfinite(nf).all()
    with pytest.raises(ValueError, match="noise floors"):
        sm.detection_fit_set(items, feats, counts, fit, noisy, None, progress=False)


def test_camera_copies_enter_the_recipe_hash_and_the_training_record(tmp_path):
    from lida_plugin.evaluate.corpus import load_corpus

    root = write_two_generator_corpus(tmp_path / "data")
    items = load_corpus(root)
    r0 = replace(sm.VERSION1, crop=32, crop_count=4, pca_dim=24, dim=8, colour=False, open_unknown_accept=0.0)
    r1 = replace(r0, det_camera_copies=1)
    _, i0, _ = sm.fit_and_export(items, tmp_path / "m0.onnx", r0, progress=False)
    _, i1, _ = sm.fit_and_export(items, tmp_path / "m1.onnx", r1, progress=False)
    assert i0.model_id != i1.model_id
    assert "camera-processed copies" in i1.training["detection_fit"]
    assert "camera" not in i0.training["detection_fit"]
    assert sm.LEGACY["det_camera_copies"] == 0 and sm.LEGACY["det_rzoo"] == 0
