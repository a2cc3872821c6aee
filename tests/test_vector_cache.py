"""The vector cache beside a store (``<store>.lida-vectors``): used only when it matches the store."""

import logging
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from lida_plugin import store, vectorcache
from lida_plugin.retrieve import Retriever
from lida_plugin.store import ExemplarStore

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import store_scale  # noqa: E402

N = 3000


@pytest.fixture(scope="module")
def data():
    return store_scale.synth(N + 500, seed=3, gens=100)


@pytest.fixture
def made(tmp_path, data):
    """A store of N synthetic exemplars with its vector cache written."""
    x, lab, _ = data
    path = tmp_path / "s.sqlite"
    store_scale.build_store(path, x[:N], lab[:N])
    with ExemplarStore(path) as s:
        assert s.write_vector_cache().startswith("vector cache written")
    return path


def _open(path):
    with ExemplarStore(path, readonly=True) as s:
        return s.exemplars(), s.content_keys()


def _from_cache(ex) -> bool:
    return not ex.embeddings.flags.writeable  # the cache's arrays are read-only maps; SQLite's are copies


def _same(a, b, keys_a, keys_b):
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(keys_a, keys_b)
    for i in (0, 1, len(a) // 2, len(a) - 1):
        assert (a.generators[i], a.families[i], a.sources[i]) == (b.generators[i], b.families[i], b.sources[i])


def _insert(s, x, lab, lo, hi):
    rows = [store._Row(f"{i:064x}", f"gen-{lab[i]:04d}", f"img-{i}.png", 64, 64, x[i].tobytes(), None)
            for i in range(lo, hi)]  # fmt: skip
    with s.conn:
        s._lock()
        s._insert_rows(rows, store_scale.FakeEncoder.model_id)


def test_cache_gives_the_same_exemplars_as_the_store(made):
    ex, keys = _open(made)
    assert _from_cache(ex)
    vectorcache.sidecar_path(made).unlink()  # removing the cache: the store is read as before
    plain, plain_keys = _open(made)
    assert not _from_cache(plain)
    _same(ex, plain, keys, plain_keys)


def test_stale_after_register_is_not_used_then_refreshed(made, data, caplog):
    x, lab, _ = data
    with ExemplarStore(made) as s:
        _insert(s, x, lab, N, N + 10)
    with caplog.at_level(logging.INFO, logger="lida_plugin.vectorcache"):
        ex, keys = _open(made)
    assert not _from_cache(ex) and len(ex) == N + 10 and "stale" in caplog.text
    assert ex.sources[len(ex) - 1] == f"img-{N + 9}.png" and len(keys) == N + 10
    with ExemplarStore(made) as s:
        assert s.write_vector_cache().startswith("vector cache written")
        assert s.write_vector_cache() == "vector cache up to date"
    again, again_keys = _open(made)
    assert _from_cache(again)
    _same(again, ex, again_keys, keys)


def test_stale_after_remove_and_reembed(made, data):
    x, lab, _ = data
    with ExemplarStore(made) as s:
        s.remove_generator(f"gen-{lab[0]:04d}", backup=False)
    ex, _ = _open(made)
    assert not _from_cache(ex) and f"gen-{lab[0]:04d}" not in set(ex.generators[:])
    with ExemplarStore(made) as s:
        s.write_vector_cache()
        with s.conn:
            s._new_epoch()  # what a re-embedding does
    assert not _from_cache(_open(made)[0])


def test_a_write_that_keeps_the_token_is_still_caught(made, data, monkeypatch):
    """A writer that does not renew ``blocks_token`` (an older lida): the counts in the stamp differ."""
    x, lab, _ = data
    monkeypatch.setattr(ExemplarStore, "_blocks_changed", lambda self: None)
    with ExemplarStore(made) as s:
        _insert(s, x, lab, N, N + 1)
    ex, _ = _open(made)
    assert not _from_cache(ex) and len(ex) == N + 1


@pytest.mark.parametrize("damage", ["truncate", "header", "ids", "first-embedding", "garbage", "empty"])
def test_corrupt_cache_is_ignored(made, damage, caplog):
    path = vectorcache.sidecar_path(made)
    header, start = vectorcache.read_header(path)
    spec = header["arrays"]
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 5000]
    elif damage == "header":
        raw[30] ^= 0xFF
    elif damage == "ids":
        raw[start + spec["ids"]["offset"] + 8] ^= 0x01
    elif damage == "first-embedding":  # not under a CRC: caught by the comparison with the first block
        raw[start + spec["embeddings"]["offset"] + 4] ^= 0x01
    elif damage == "garbage":
        raw = bytearray(b"not a cache at all" * 100)
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        ex, keys = _open(made)
    assert not _from_cache(ex) and "reading the store instead" in caplog.text
    path.unlink()
    plain, plain_keys = _open(made)
    _same(ex, plain, keys, plain_keys)


def test_cache_of_another_store_is_not_used(made, tmp_path, data):
    x, lab, _ = data
    other = tmp_path / "other.sqlite"
    store_scale.build_store(other, x[:N], lab[:N])  # same rows, another store
    shutil.copy(vectorcache.sidecar_path(made), vectorcache.sidecar_path(other))
    assert not _from_cache(_open(other)[0])


def test_concurrent_cache_writers_leave_a_valid_cache(made):
    errors = []

    def write():
        try:
            with ExemplarStore(made) as s:
                vectorcache.write(s.vector_cache_path, *_fresh(s))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def _fresh(s):
        s.conn.execute("BEGIN")
        try:
            stamp = s.vector_stamp()
            emb, ids, gids, names = s._block_arrays()
        finally:
            s.conn.execute("ROLLBACK")
        return stamp, {"embeddings": emb, "ids": ids, "gids": gids, "sources": np.frombuffer(names, np.uint8)}

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _from_cache(_open(made)[0])
    assert not [p for p in made.parent.iterdir() if p.name.startswith(".lida-tmp-")]


def test_index_from_the_cache_answers_like_the_store(tmp_path, data):
    pytest.importorskip("faiss")  # the index extra
    x, lab, q = data
    path = tmp_path / "s.sqlite"
    store_scale.build_store(path, x[:N], lab[:N])
    with ExemplarStore(path) as s:
        assert "vector cache written" in s.update_index(min_rows=100)
        assert s.update_index(min_rows=100).endswith("vector cache up to date")
    ex, _ = _open(path)
    assert _from_cache(ex) and ex.segments
    cached_answers = [Retriever(ex).index.search(qi[None, :], 10) for qi in q]
    vectorcache.sidecar_path(path).unlink()
    plain, _ = _open(path)
    assert not _from_cache(plain) and plain.segments
    for (s1, p1), qi in zip(cached_answers, q, strict=True):
        s2, p2 = Retriever(plain).index.search(qi[None, :], 10)
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_allclose(s1, s2)
    # an index updated since the cache was written: the cache's vectors are used, its index is not
    with ExemplarStore(path) as s:
        s.update_index(min_rows=100)
        with s.conn:
            s.conn.execute("UPDATE meta SET value='other' WHERE key='ann_token'")
    ex, _ = _open(path)
    assert _from_cache(ex) and ex.segments  # the index was read from SQLite instead


def test_stack_with_a_small_store_keeps_the_large_store_mapped(tmp_path, data):
    """A user store with an index searched together with a small (bundled-like) store: the large
    store's embeddings stay in its memory-mapped cache (no joined copy), and every query's neighbours
    are the per-store results merged by exact similarity."""
    pytest.importorskip("faiss")
    x, lab, q = data
    big, small = tmp_path / "big.sqlite", tmp_path / "small.sqlite"
    store_scale.build_store(big, x[:N], lab[:N])
    with ExemplarStore(big) as s:
        s.update_index(min_rows=100)
    store_scale.build_store(small, x[N : N + 50], lab[N : N + 50])
    stack = store.StoreStack([ExemplarStore(big, readonly=True), ExemplarStore(small, readonly=True)],
                             store_scale.FakeEncoder)  # fmt: skip
    try:
        ex = stack.exemplars
        assert isinstance(ex.embeddings, store.ChainRows) and len(ex) == N + 50
        seg_big, seg_small = ex.segments
        assert seg_big.ann is not None and not seg_big.embeddings.flags.writeable  # the cache's map itself
        assert seg_small.ann is None and (seg_small.start, seg_small.length) == (N, 50)
        np.testing.assert_array_equal(
            ex.embeddings[[0, N - 1, N, N + 49]], np.vstack([x[0], x[N - 1], x[N], x[N + 49]])
        )
        np.testing.assert_array_equal(np.asarray(ex.embeddings), x[: N + 50])
        retr = Retriever(ex)
        for qi in q[:20]:
            sims, pos = retr.index.search(qi[None, :], 10)
            assert np.all(np.diff(sims[0]) <= 0)
            np.testing.assert_allclose(sims[0], x[pos[0]] @ qi, rtol=0, atol=1e-5)  # exact similarities
            exact_small = np.sort(x[N : N + 50] @ qi)[::-1][:10]
            big_only, _ = seg_big.ann.search(qi, 10)
            merged = np.sort(np.concatenate([exact_small, big_only]))[::-1][:10]
            np.testing.assert_allclose(sims[0], merged, atol=1e-6)
    finally:
        stack.close()
