"""The shipped default encoder and store follow the contract and belong together."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # part of the exporters test set (train extra)
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from lida_plugin.contract import INPUT_NAME, OUTPUT_NAME, parse_metadata  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "lida_plugin" / "data"
MODEL = DATA / "encoder.onnx"
STORE = DATA / "default-store.sqlite"


@pytest.fixture(scope="module")
def info():
    if not MODEL.is_file():
        pytest.skip("no bundled encoder in this checkout")
    assert MODEL.stat().st_size <= 50 * 2**20
    return parse_metadata({p.key: p.value for p in onnx.load(str(MODEL)).metadata_props}, str(MODEL))


def test_bundled_encoder_runs(info):
    sess = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    s = info.crop_size
    x = np.random.default_rng(0).integers(0, 256, (3, 3, s, s), dtype=np.uint8)
    e = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    assert e.shape == (3, info.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    low = sess.run([OUTPUT_NAME], {INPUT_NAME: x & 7})[0]
    if info.input_bits == 3:  # a low-bit model applies the fingerprint itself: x and x & 7 embed the same
        np.testing.assert_allclose(low, e, atol=1e-6)
        assert info.fingerprint_mode == "scaled"
    else:  # the residual-statistics model reads every bit, and says so
        assert info.architecture.startswith("spam-t3") and info.input_bits == 8 and np.abs(low - e).max() > 1e-3
        assert info.detection_head["kind"] == "logistic" and len(info.detection_head["w"]) == info.embedding_dim
    assert info.detection_fpr == pytest.approx(0.05)
    assert info.recipe_hash and info.training.get("recipe")


def test_bundled_store_matches_encoder(info):
    if not STORE.is_file():
        pytest.skip("no bundled store in this checkout")
    con = sqlite3.connect(f"{STORE.resolve().as_uri()}?mode=ro", uri=True)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    gens = {r[0] for r in con.execute("SELECT name FROM generators")}
    con.close()
    assert meta["model_id"] == info.model_id
    assert {"sd-1.5", "sd-2-base", "z-image", "dall-e-2", "stylegan2-ada-ffhq"} <= gens
    assert not any(g.startswith("ldm-sr") for g in gens)
