"""The feature probe's caches (exporters/feature_probe.py): named so that features of another crop
geometry or another CNN are never read back as these."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
fp = pytest.importorskip("lida_exporters.feature_probe")


def test_cache_names_carry_a_non_default_crop_count(monkeypatch, tmp_path):
    monkeypatch.setattr(fp, "CACHE", tmp_path)
    assert fp._cached("probe-spamc") == tmp_path / "probe-spamc.npy"  # the default: the caches made before
    monkeypatch.setattr(fp, "GEOM", dataclasses.replace(fp.GEOM, crop_count=64))
    assert fp._cached("probe-spamc") == tmp_path / "probe-spamc-c64.npy"


def test_cnn_feature_is_any_encoder_cached_by_its_hash(monkeypatch, tmp_path, tiny_model):
    from lida_plugin.encoder import Encoder

    monkeypatch.setattr(fp, "CACHE", tmp_path)
    enc = Encoder(tiny_model, threads=1)
    s = enc.info.crop_size
    crops = np.random.default_rng(0).integers(0, 256, (5, 3, s, s), dtype=np.uint8)
    x = fp.feature(f"cnn={tiny_model}", crops, None)
    assert x.shape == (5, enc.info.embedding_dim)
    np.testing.assert_allclose(x, enc.embed_crops(crops), atol=1e-6)
    (cached,) = tmp_path.glob("probe-cnn-*.npy")
    np.save(cached, np.zeros_like(x))  # read back from the cache, not recomputed
    assert not fp.feature(f"cnn={tiny_model}", crops, None).any()


def test_similarity_probe_crop_level_aggregation():
    """One crop an image: every crop-level rule is the cosine of the two images' crops."""
    sp = pytest.importorskip("lida_exporters.similarity_probe")
    rng = np.random.default_rng(0)
    crops_of = [c / np.linalg.norm(c, axis=1, keepdims=True) for c in rng.normal(size=(6, 1, 8))]
    chamfer = sp.crop_level(crops_of, lambda p: 0.5 * (p.max(2).mean(1) + p.max(1).mean(1)))
    want = np.concatenate(crops_of)[[0, 1]] @ np.concatenate(crops_of)[[2, 3, 4]].T
    np.testing.assert_allclose(chamfer([0, 1], [2, 3, 4]), want, atol=1e-12)
    two = [np.vstack([c, -c]) for c in crops_of]  # a crop and its opposite: chamfer finds the matching one
    np.testing.assert_allclose(sp.crop_level(two, lambda p: p.max(2).mean(1))([0], [0]), [[1.0]], atol=1e-12)


def _gram(x, mean, proj):
    from lida_exporters.spam_model import apply_map

    e = apply_map(x, mean, proj)
    return e @ e.T


def test_map_probe_mixed_scatter_is_fit_map_at_zero_and_differs_with_image_scatter():
    """``map_probe.fit_mixed_scatter``: at ``alpha = 0`` the same retrieval space as ``fit_map`` (cosines
    equal: the axes may differ in sign); with the image-level scatter mixed in, another one."""
    from lida_exporters.map_probe import fit_mixed_scatter
    from lida_exporters.spam_model import SpamRecipe, fit_map

    rng = np.random.default_rng(1)
    owner = np.repeat(np.arange(40), 6)  # 40 images of 6 crops
    labels = np.array([f"g{i % 4}" for i in owner])
    image_shift = rng.normal(size=(40, 30))[owner] * 2.0  # what varies between images of one class
    x = (rng.normal(size=(240, 30)) + image_shift + rng.normal(size=(4, 30))[owner % 4]).astype(np.float32)
    r = SpamRecipe(pca_dim=20, dim=10)
    ref = _gram(x, *fit_map(x, labels, r, standardize=False))
    assert np.allclose(_gram(x, *fit_mixed_scatter(x, labels, owner, 0.0, r)), ref, atol=1e-4)
    assert not np.allclose(_gram(x, *fit_mixed_scatter(x, labels, owner, 1.0, r)), ref, atol=1e-2)


def test_map_probe_centred_embeddings_are_unit_and_centred_on_the_rows():
    from lida_exporters.map_probe import centred

    e = np.random.default_rng(2).normal(size=(30, 8)) + 3.0
    c = centred(e, np.arange(30) < 20)
    assert np.allclose(np.linalg.norm(c, axis=1), 1.0)
    assert np.allclose(c, (e - e[:20].mean(0)) / np.linalg.norm(e - e[:20].mean(0), axis=1, keepdims=True))
