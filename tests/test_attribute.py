import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from lida_plugin.attribute import AI, INCONCLUSIVE, REAL, Attributor
from lida_plugin.decode import decode_file
from lida_plugin.encoder import Encoder
from lida_plugin.retrieve import NumpyIndex, Retriever
from lida_plugin.store import Exemplars, ExemplarStore, StoreStack

SCHEMA = json.loads((Path(__file__).parents[1] / "lida_plugin/schemas/attribution-result.schema.json").read_text())


@pytest.fixture
def attributor(tmp_path, tiny_model, images):
    enc = Encoder(tiny_model, device="cpu", threads=1)
    store = ExemplarStore(tmp_path / "s.sqlite", create=True)
    store.register(enc, decode_file(images["gen-a"][0]), "gen-a", "fam-ab")
    store.register(enc, decode_file(images["gen-b"][0]), "gen-b", "fam-ab")
    a = Attributor(enc, StoreStack([store], enc), top_k=3)
    yield a
    store.close()


def test_verdicts_for_registered_unregistered_and_real(attributor, images):
    res = {
        r.path: r
        for r in attributor.attribute_paths(
            images["gen-a"][1:] + images["gen-b"][1:] + images["gen-d"] + images["real"]
        )
    }
    for p in images["gen-a"][1:]:
        assert (res[str(p)].verdict, res[str(p)].generator, res[str(p)].family) == (AI, "gen-a", "fam-ab")
    for p in images["gen-b"][1:]:
        assert res[str(p)].generator == "gen-b"
    for p in images["gen-d"]:  # generated but never registered: open set
        r = res[str(p)]
        assert r.verdict == AI and r.generator is None and "too far" in r.reason
    for p in images["real"]:
        assert res[str(p)].verdict == REAL and res[str(p)].generator is None
    for r in res.values():
        jsonschema.validate(r.to_dict(), SCHEMA)
        assert [n["similarity"] for n in r.neighbors] == sorted((n["similarity"] for n in r.neighbors), reverse=True)


def test_jpeg_is_inconclusive_unless_forced(attributor, images, tmp_path):
    from PIL import Image

    jpg = tmp_path / "a.jpg"
    Image.open(images["gen-a"][1]).save(jpg, quality=85)
    r = attributor.attribute_file(jpg)
    assert r.verdict == INCONCLUSIVE and r.generator is None and "lossy JPEG" in r.reason
    jsonschema.validate(r.to_dict(), SCHEMA)
    attributor.force = True
    r = attributor.attribute_file(jpg)
    assert r.verdict != INCONCLUSIVE and r.reliability["forced"] is True


def test_bad_files_become_error_records_and_the_rest_go_on(attributor, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    paths = [images["gen-a"][1], bad, tmp_path / "missing.png", images["real"][0]]
    res = list(attributor.attribute_paths(paths))
    assert [r.status for r in res] == ["ok", "error", "error", "ok"]
    assert [r.path for r in res] == [str(p) for p in paths]
    assert "not an image" in res[1].error and "no such file" in res[2].error
    for r in res:
        jsonschema.validate(r.to_dict(), SCHEMA)


def test_batched_and_single_results_agree(attributor, images):
    paths = images["gen-a"] + images["real"]
    attributor.images_per_batch = 4
    batched = [r.detection["ai_score"] for r in attributor.attribute_paths(paths)]
    single = [attributor.attribute_file(p).detection["ai_score"] for p in paths]
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_retriever_ranks_generators_by_their_nearest_exemplar():
    emb = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6]], np.float32)
    ex = Exemplars(emb, ["a", "b", "c", "b"], [None] * 4, ["a1", "b1", "c1", "b2"], ["s"] * 4)
    (ranked,) = Retriever(ex).rank(np.array([[1, 0]], np.float32), top_k=3)
    assert [(n.generator, n.exemplar) for n in ranked] == [("a", "a1"), ("b", "b2"), ("c", "c1")]
    assert ranked[1].similarity == pytest.approx(0.8)
    # deepening: with depth 1 the ranking still reaches 3 distinct generators
    (deep,) = Retriever(ex).rank(np.array([[1, 0]], np.float32), top_k=3, depth=1)
    assert [n.generator for n in deep] == ["a", "b", "c"]


def test_faiss_backend_agrees_with_numpy():
    faiss = pytest.importorskip("faiss")
    from lida_plugin.retrieve import FaissIndex

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:5] + 0.01
    s1, i1 = NumpyIndex(x).search(q, 4)
    s2, i2 = FaissIndex(x).search(q, 4)
    assert faiss is not None and np.array_equal(i1, i2) and np.allclose(s1, s2, atol=1e-5)


def test_a_registered_exemplar_is_reported_as_a_self_match(attributor, images, tmp_path):
    """Known images say so: the record names the exemplar with the same bytes, so a self-match is never
    mistaken for a judgement; a copy under another name matches too, other images do not."""
    import shutil

    copy = tmp_path / "renamed.png"
    shutil.copy(images["gen-b"][0], copy)
    known, renamed, other = (attributor.attribute_file(p) for p in (images["gen-a"][0], copy, images["gen-a"][1]))
    assert known.exact_match is not None and known.exact_match["generator"] == "gen-a"
    assert known.exact_match["exemplar"] == images["gen-a"][0].name and "self-match" in known.reason
    assert renamed.exact_match["generator"] == "gen-b"
    assert other.exact_match is None and "self-match" not in other.reason
    for r in (known, renamed, other):
        jsonschema.validate(r.to_dict(), SCHEMA)


def test_a_jpeg_gets_the_lossy_detectors_hint_and_stays_inconclusive(attributor, images, tmp_path):
    """Issue 11: a JPEG without declared provenance keeps an inconclusive attribution and carries the
    lossy detector's score as its own evidence item, marked as a hint (calibrated: false) since it
    does not reach the verdict bar on unseen generators."""
    from PIL import Image

    jpg = tmp_path / "b.jpg"
    Image.open(images["gen-a"][1]).save(jpg, quality=90)
    r = attributor.attribute_file(jpg)
    assert r.verdict == INCONCLUSIVE and r.decided_by is None
    lossy = [e for e in r.evidence if e["source"] == "lossy-detector"]
    assert len(lossy) == 1 and lossy[0]["measured"] is True and lossy[0]["calibrated"] is False
    assert lossy[0]["claim"] in ("ai-generated", "not-detected") and 0.0 <= lossy[0]["score"] <= 1.0
    png = attributor.attribute_file(images["gen-a"][1])  # a lossless PNG: the fingerprint answers, no lossy item
    assert not [e for e in png.evidence if e["source"] == "lossy-detector"]
    jsonschema.validate(r.to_dict(), SCHEMA)
