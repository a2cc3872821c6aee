"""Schema 2 stores: compact default, embedding blocks, old-schema compatibility, the persisted index."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from lida_plugin import ann, store
from lida_plugin.decode import decode_file
from lida_plugin.encoder import Encoder
from lida_plugin.errors import StoreError
from lida_plugin.fingerprint import lowbits
from lida_plugin.retrieve import NumpyIndex, Retriever
from lida_plugin.store import Exemplars, ExemplarStore, StoreStack, bundled_store_path, decode_crops, encode_crops

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import store_scale  # noqa: E402

# The schema version 1 DDL and row layout exactly as the old code wrote them.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE generators (name TEXT PRIMARY KEY, family TEXT, notes TEXT, added TEXT NOT NULL);
CREATE TABLE exemplars (
    id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE,
    generator TEXT NOT NULL REFERENCES generators(name) ON DELETE CASCADE,
    source TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, model_id TEXT NOT NULL,
    embedding BLOB NOT NULL, crops BLOB NOT NULL, crop_count INTEGER NOT NULL, crop_size INTEGER NOT NULL,
    added TEXT NOT NULL
);
CREATE INDEX exemplars_generator ON exemplars(generator);
"""


@pytest.fixture
def enc(tiny_model):
    return Encoder(tiny_model, device="cpu", threads=1)


@pytest.fixture
def v1_store(tmp_path, enc, images):
    """A schema version 1 store, written the way the old code wrote one."""
    path = tmp_path / "old.sqlite"
    c = sqlite3.connect(path)
    c.executescript(V1_SCHEMA)
    i = enc.info
    c.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema_version", "1"), ("store_id", "0123456789abcdef"), ("created", "2026-01-01T00:00:00Z"),
        ("model_id", i.model_id), ("crop_size", str(i.crop_size)), ("crop_count", str(i.crop_count)),
        ("crop_align", str(i.crop_align)), ("embedding_dim", str(i.embedding_dim)), ("input_resize", "0")])  # fmt: skip
    for gen in ("gen-a", "gen-b"):
        c.execute("INSERT INTO generators VALUES (?, 'fam', NULL, '2026-01-01T00:00:00Z')", (gen,))
        for p in images[gen]:
            d = decode_file(p)
            crops = enc.crops_for(d)
            c.execute(
                "INSERT INTO exemplars (sha256, generator, source, width, height, model_id, embedding, crops,"
                " crop_count, crop_size, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (d.sha256, gen, p.name, d.width, d.height, i.model_id, enc.embed_crop_sets([crops])[0].tobytes(),
                 zlib.compress(lowbits(crops).tobytes(), 6), len(crops), crops.shape[-1], "2026-01-01T00:00:00Z"),
            )  # fmt: skip
    c.commit()
    c.close()
    return path


def _direct(enc, paths):
    return enc.embed_crop_sets([enc.crops_for(decode_file(p)) for p in paths])


# -- compact default ---------------------------------------------------------------------------
def test_default_store_is_compact_and_round_trips(tmp_path, enc, images):
    path = tmp_path / "s.sqlite"
    paths = images["gen-a"] + images["gen-b"]
    ExemplarStore(tmp_path / "empty.sqlite", create=True).compact()
    with ExemplarStore(path, create=True) as s:
        assert s.keep == "none"
        for p in paths:
            s.register(enc, decode_file(p), p.name[:5], "fam")
        ex = s.exemplars()
        np.testing.assert_allclose(ex.embeddings, _direct(enc, paths), atol=1e-6)
        assert list(ex.generators) == [p.name[:5] for p in paths]
        assert list(ex.sources) == [p.name for p in paths]
        assert s.kept_crops_summary() == {"none": 6}
        s.compact()
        with pytest.raises(StoreError, match="6 kept no crops.*needs the original images.*--keep raw"):
            s.reembed(enc)
    # what the exemplars add to an empty store (its fixed cost is a page per table and index)
    assert (path.stat().st_size - (tmp_path / "empty.sqlite").stat().st_size) / len(paths) <= 16 * 1024
    # export, import, remove keep working
    with ExemplarStore(path, readonly=True) as s:
        s.backup_to(tmp_path / "export.sqlite")
    with (
        ExemplarStore(tmp_path / "export.sqlite", readonly=True) as src,
        ExemplarStore(tmp_path / "b.sqlite", create=True) as dst,
    ):
        assert dst.import_from(src, enc) == (6, 0)
        np.testing.assert_array_equal(dst.exemplars().embeddings, ex.embeddings)
        assert dst.remove_generator("gen-a") == 3
        assert list(dst.exemplars().generators) == ["gen-b"] * 3


@pytest.mark.parametrize("kind", ["lowbits", "raw"])
def test_kept_crops_codec_is_lossless(kind):
    crops = np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    got = decode_crops(encode_crops(crops, kind), kind, 4, 16)
    np.testing.assert_array_equal(got, crops if kind == "raw" else crops & 7)


def test_lowbit_crops_refused_for_a_model_that_needs_raw_pixels(tmp_path, enc, images):
    from conftest import build_tiny_model, tiny_info

    rgb = Encoder(
        build_tiny_model(tmp_path / "rgb.onnx", tiny_info(model_id="rgb", fingerprint_mode="rgb")), device="cpu"
    )
    with ExemplarStore(tmp_path / "s.sqlite", create=True, keep="lowbits") as s:
        s.register(enc, decode_file(images["gen-a"][0]), "gen-a")
        with pytest.raises(StoreError, match="1 kept lowbits crops; it needs raw crops"):
            s.reembed(rgb)
    with ExemplarStore(tmp_path / "r.sqlite", create=True, keep="raw") as s:
        s.register(enc, decode_file(images["gen-a"][0]), "gen-a")
        assert s.reembed(rgb) == 1
        np.testing.assert_allclose(s.exemplars().embeddings, _direct(rgb, images["gen-a"][:1]), atol=1e-5)


# -- old schema --------------------------------------------------------------------------------
def test_v1_store_reads_as_is_then_migrates_on_write(tmp_path, v1_store, enc, images):
    paths = images["gen-a"] + images["gen-b"]
    with ExemplarStore(v1_store) as s:
        assert s.legacy and s.keep == "lowbits"
        ex = s.exemplars()
        np.testing.assert_allclose(ex.embeddings, _direct(enc, paths), atol=1e-6)
        StoreStack([s], enc)
        s.backup_to(tmp_path / "export-v1.sqlite")  # export of an old store: still an old store
    assert not list(tmp_path.glob("old.sqlite.bak-*"))  # reading did not rewrite the file
    # import from an old store into a new one, keeping its crops
    with (
        ExemplarStore(tmp_path / "export-v1.sqlite", readonly=True) as src,
        ExemplarStore(tmp_path / "n.sqlite", create=True, keep="lowbits") as dst,
    ):
        assert dst.import_from(src, enc) == (6, 0)
        assert dst.kept_crops_summary() == {"lowbits": 6}
    # the first write migrates (after a backup copy of the old file) and keeps the crops
    with ExemplarStore(v1_store) as s:
        assert s.remove_generator("gen-b") == 3
        assert not s.legacy and s.meta["schema_version"] == "2"
        assert s.kept_crops_summary() == {"lowbits": 3}
        np.testing.assert_array_equal(s.exemplars().embeddings, ex.embeddings[:3])
        assert s.register(enc, decode_file(images["gen-d"][0]), "gen-d")
        assert s.exemplars().ids.tolist() == [1, 2, 3, 7]
    backups = sorted(tmp_path.glob("old.sqlite.bak-*"))
    assert len(backups) == 2  # the migration's and remove's
    with ExemplarStore(backups[0], readonly=True) as b:
        assert b.legacy and b.exemplar_count() == 6
    # re-embedding a migrated store from its kept low-bit crops equals embedding the originals
    from conftest import build_tiny_model, tiny_info

    other = Encoder(build_tiny_model(tmp_path / "o.onnx", tiny_info(model_id="other-model"), seed=7), device="cpu")
    with ExemplarStore(v1_store) as s:
        s.remove_generator("gen-d", backup=False)
        assert s.reembed(other) == 3
        np.testing.assert_allclose(s.exemplars().embeddings, _direct(other, images["gen-a"]), atol=1e-5)


def test_bundled_old_schema_store_still_opens():
    path = bundled_store_path()
    with ExemplarStore(path, immutable=True) as s:
        ex = s.exemplars()
        assert len(ex) == s.exemplar_count() > 0
        assert ex.embeddings.shape[1] == int(s.meta["embedding_dim"])
        np.testing.assert_allclose(np.linalg.norm(ex.embeddings, axis=1), 1, atol=1e-4)


# -- blocks ------------------------------------------------------------------------------------
def test_contiguous_load_equals_row_by_row(tmp_path, enc, images, monkeypatch):
    monkeypatch.setattr(store, "BLOCK_ROWS", 2)  # several blocks, a partly filled last one
    with ExemplarStore(tmp_path / "s.sqlite", create=True) as s:
        for gen in ("gen-a", "gen-b", "gen-d"):
            for p in images[gen]:
                s.register(enc, decode_file(p), gen, f"fam-{gen}")
        assert s.conn.execute("SELECT COUNT(*) FROM embedding_blocks").fetchone()[0] == 5
        s.remove_generator("gen-b", backup=False)
        for ex, ref in ((s.exemplars(), s.exemplars_by_row()),):
            np.testing.assert_array_equal(ex.embeddings, ref.embeddings)
            assert ex.embeddings.flags.c_contiguous
            for col in ("generators", "families", "sources", "store_ids"):
                assert list(getattr(ex, col)) == list(getattr(ref, col))
            np.testing.assert_array_equal(ex.ids, ref.ids)
        assert len(ex) == 6


CRASH_CHILD = """
import sys, numpy as np
sys.path.insert(0, {bench!r})
import store_scale
from lida_plugin.store import ExemplarStore, _Row
x, lab, _ = store_scale.synth(200_000, seed=3)
with ExemplarStore({path!r}, create=True) as s:
    with s.conn:
        s._bind_model(store_scale.FakeEncoder)
    s.add_generator("g")
    print("ready", flush=True)
    for o in range(0, len(x), 5000):
        rows = [_Row(f"{{i:064x}}", "g", f"i{{i}}.png", 64, 64, x[i].tobytes(), None) for i in range(o, o + 5000)]
        with s.conn:
            s._lock()
            s._insert_rows(rows, "synthetic-d128")
"""


def test_killed_writer_leaves_rows_and_blocks_consistent(tmp_path):
    path = tmp_path / "s.sqlite"
    code = CRASH_CHILD.format(bench=str(REPO / "benchmarks"), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 120
    while time.time() < deadline:
        with sqlite3.connect(path, timeout=30) as c:
            if c.execute("SELECT COUNT(*) FROM exemplars").fetchone()[0] >= 10_000:
                break
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0, 0.3))  # somewhere inside a later transaction
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ExemplarStore(path) as s:
        n = s.exemplar_count()
        ex = s.exemplars()
        assert n >= 10_000 and n % 5000 == 0  # whole transactions only
        ids = [r[0] for r in s.conn.execute("SELECT id FROM exemplars ORDER BY id")]
        np.testing.assert_array_equal(ex.ids, ids)
        np.testing.assert_allclose(np.linalg.norm(ex.embeddings, axis=1), 1, atol=1e-5)


def test_failed_write_rolls_back_row_and_block(tmp_path, enc, images, monkeypatch):
    with ExemplarStore(tmp_path / "s.sqlite", create=True) as s:
        s.register(enc, decode_file(images["gen-a"][0]), "gen-a")

        def boom(rows):
            raise OSError("disk full")

        monkeypatch.setattr(s, "_append_blocks", boom)
        with pytest.raises(OSError):
            s.register(enc, decode_file(images["gen-a"][1]), "gen-a")
        assert s.exemplar_count() == len(s.exemplars()) == 1


# -- retrieval ---------------------------------------------------------------------------------
def _old_rank(ex, q, top_k, depth=256):
    """Retriever.rank as it was before schema 2 (reference for small stores)."""
    index, n = NumpyIndex(ex.embeddings), len(ex)
    d = min(depth, n)
    while True:
        sims, ids = index.search(q[None, :], d)
        ranked = {}
        for s, i in zip(sims[0], ids[0], strict=True):
            if ex.generators[i] not in ranked:
                ranked[ex.generators[i]] = (ex.generators[i], ex.families[i], float(s), ex.sources[i])
        if len(ranked) >= top_k or d >= n:
            break
        d = min(n, d * 4)
    return list(ranked.values())[:top_k]


def test_retriever_unchanged_for_small_stores(tmp_path, enc, images):
    x, lab, q = store_scale.synth(3000, seed=5, gens=400)
    path = tmp_path / "s.sqlite"
    store_scale.build_store(path, x, lab)
    with ExemplarStore(path, readonly=True) as s:
        ex = s.exemplars()
    assert not ex.segments  # below the threshold: exact
    ref = Exemplars(x, [f"gen-{g:04d}" for g in lab], [f"fam-{g % 300:03d}" for g in lab],
                    [f"img-{i:07d}.png" for i in range(len(x))], ["x"] * len(x))  # fmt: skip
    retr = Retriever(ex)
    for qi in q[:30]:
        got = [(n.generator, n.family, n.similarity, n.exemplar) for n in retr.rank(qi[None, :], 5)[0]]
        want = _old_rank(ref, qi, 5)
        assert [g[:2] + g[3:] for g in got] == [w[:2] + w[3:] for w in want]
        np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], atol=1e-6)


def _recall(searcher, x, q, k=10):
    hits = []
    for qi in q:
        sims, pos = searcher.search(qi, k)
        np.testing.assert_allclose(sims, x[pos] @ qi, atol=1e-5)  # similarities are exact
        hits.append(len(set(pos.tolist()) & set(np.argsort(-(x @ qi))[:k].tolist())) / k)
    return float(np.mean(hits))


def test_index_recall_on_clustered_embeddings():
    pytest.importorskip("faiss")  # the index extra
    x, _, q = store_scale.synth(20_000, seed=1)
    ids = np.arange(1, len(x) + 1, dtype=np.int64)
    index = ann.build(ann.DEFAULT_KIND, x, ids)
    assert _recall(ann.AnnSearcher(index, x, ids, ids), x, q) >= 0.95
    again = ann.from_bytes(index.kind, index.to_bytes())  # persisted form answers the same
    assert _recall(ann.AnnSearcher(again, x, ids, ids), x, q) >= 0.95


def test_index_follows_register_remove_and_reembed(tmp_path):
    pytest.importorskip("faiss")  # the index extra
    x, lab, q = store_scale.synth(6000, seed=2, gens=200)
    path = tmp_path / "s.sqlite"
    store_scale.build_store(path, x[:5000], lab[:5000])
    with ExemplarStore(path) as s:
        assert s.update_index(min_rows=100).startswith("built faiss-ivf-sq8")
        assert s.update_index(min_rows=100).startswith("up to date")
        ex = s.exemplars()
        (seg,) = ex.segments
        assert len(seg.ann.tail) == 0 and _recall(seg.ann, ex.embeddings, q) >= 0.9
        # registered after the index: searched exactly until the index is updated
        rows = [store._Row(f"{i:064x}", f"gen-{lab[i]:04d}", f"img-{i}.png", 64, 64, x[i].tobytes(), None)
                for i in range(5000, 6000)]  # fmt: skip
        with s.conn:
            s._lock()
            s._insert_rows(rows, store_scale.FakeEncoder.model_id)
        ex = s.exemplars()
        assert len(ex.segments[0].ann.tail) == 1000
        sims, pos = Retriever(ex).index.search(x[5500][None, :], 3)
        assert ex.sources[pos[0][0]] == "img-5500.png" and sims[0][0] == pytest.approx(1, abs=1e-5)
        assert _recall(ex.segments[0].ann, ex.embeddings, q) >= 0.9
        assert "+1000 -0" in s.update_index(min_rows=100)
        assert len(s.exemplars().segments[0].ann.tail) == 0
        # removed: never returned, even by the stale index
        gone = f"gen-{lab[5500]:04d}"
        s.remove_generator(gone, backup=False)
        ex = s.exemplars()
        retr = Retriever(ex)
        _, pos = retr.index.search(x[5500][None, :], 50)
        assert gone not in {ex.generators[i] for i in pos[0]}
        assert "-0" not in s.update_index(min_rows=100)
        # new vectors (re-embedding): the old index is not used
        with s.conn:
            s._new_epoch()
        assert not s.exemplars().segments
        assert s.load_index(s.exemplars()) is None
