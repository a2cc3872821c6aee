"""Approximate nearest-neighbour search over a large exemplar store, with exact re-ranking.

Chosen by measurement (``benchmarks/store_scale.py``, ``docs/scale.md``): a faiss inverted-file
index with 8-bit scalar-quantised codes (``IVF-SQ8``) over the store's unit embeddings. A query
visits the :attr:`FaissIVF.nprobe` nearest of ``nlist`` cells, takes the best
:data:`RERANK` candidates by the quantised inner product, and re-ranks them exactly against the
store's float32 embeddings, so every similarity returned is the exact cosine. The index is keyed by
exemplar id, so adding and removing exemplars is cheap (no retraining); it is persisted inside
the store file (:meth:`lida_plugin.store.ExemplarStore.update_index`).

``usearch`` (HNSW, int8) is kept behind the same interface for the benchmark's side-by-side.

Stores below :data:`EXACT_BELOW` exemplars are searched exactly (numpy): there the matrix
product is fast enough, and the answers are the exact ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

EXACT_BELOW = 30_000
"""Stores with fewer exemplars are searched exactly (see docs/scale.md for the measurement)."""
RERANK = 64
"""Candidates taken from the quantised index per query, re-ranked exactly."""
MAX_DEPTH = 4096
"""Most neighbours one query asks an approximate index for (the retriever's deepening stops here)."""
KINDS = ("faiss-ivf-sq8", "usearch-hnsw-i8")
DEFAULT_KIND = "faiss-ivf-sq8"


def available(kind: str = DEFAULT_KIND) -> bool:
    try:
        if kind.startswith("faiss"):
            import faiss  # noqa: F401
        else:
            import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


class FaissIVF:
    """faiss ``IndexIVFScalarQuantizer`` (8-bit codes, inner product), ids = exemplar ids."""

    kind = "faiss-ivf-sq8"

    def __init__(self, index, nprobe: int) -> None:
        self.index = index
        self.nprobe = nprobe
        index.nprobe = nprobe

    @staticmethod
    def nlist_for(n: int) -> int:
        return int(min(16384, max(16, 2 * math.sqrt(n))))

    @classmethod
    def build(cls, embeddings: np.ndarray, ids: np.ndarray, *, seed: int = 0) -> FaissIVF:
        import faiss

        n, d = embeddings.shape
        nlist = cls.nlist_for(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = 10
        index.cp.seed = seed
        sample = embeddings
        if n > 40 * nlist:
            pick = np.sort(np.random.default_rng(seed).choice(n, 40 * nlist, replace=False))
            sample = embeddings[pick]
        index.train(np.ascontiguousarray(sample, np.float32))
        out = cls(index, nprobe=max(16, nlist // 32))
        out.add(embeddings, ids)
        return out

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.asarray(ids, np.int64))

    def search_ids(self, query: np.ndarray, k: int) -> np.ndarray:
        """Ids of about the ``k`` best candidates (``-1`` padded), by the quantised score."""
        _, ids = self.index.search(np.ascontiguousarray(query.reshape(1, -1), np.float32), k)
        return ids[0]

    def to_bytes(self) -> bytes:
        import faiss

        return faiss.serialize_index(self.index).tobytes() + int(self.nprobe).to_bytes(4, "little")

    @classmethod
    def from_bytes(cls, data) -> FaissIVF:
        """From :meth:`to_bytes`' output, ``bytes`` or any buffer (e.g. a memory-mapped vector cache). Read
        through a callback reader: ``deserialize_index`` would first copy the whole buffer (measured 0.31 s
        against 0.04 s for a 140 MB index, docs/scale.md)."""
        import faiss

        view = memoryview(data).cast("B")
        body, nprobe = view[:-4], int.from_bytes(view[-4:], "little")
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            chunk = body[pos : pos + n].tobytes()
            pos += len(chunk)
            return chunk

        return cls(faiss.read_index(faiss.PyCallbackIOReader(read)), nprobe)


class USearchHNSW:
    """usearch HNSW over int8-quantised vectors, keys = exemplar ids."""

    kind = "usearch-hnsw-i8"

    def __init__(self, index) -> None:
        self.index = index

    @staticmethod
    def _new(d: int):
        from usearch.index import Index

        return Index(ndim=d, metric="ip", dtype="i8", connectivity=16, expansion_add=64, expansion_search=64)

    @classmethod
    def build(cls, embeddings: np.ndarray, ids: np.ndarray, *, seed: int = 0) -> USearchHNSW:
        out = cls(cls._new(embeddings.shape[1]))
        out.add(embeddings, ids)
        return out

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if len(ids):
            self.index.add(np.asarray(ids, np.uint64), np.ascontiguousarray(vectors, np.float32), threads=1)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove(np.asarray(ids, np.uint64))

    def search_ids(self, query: np.ndarray, k: int) -> np.ndarray:
        self.index.expansion_search = max(64, k)
        m = self.index.search(np.asarray(query, np.float32).ravel(), k, threads=1)
        return np.asarray(m.keys, np.int64)

    def to_bytes(self) -> bytes:
        return bytes(self.index.save())

    @classmethod
    def from_bytes(cls, data: bytes) -> USearchHNSW:
        from usearch.index import Index

        return cls(Index.restore(bytearray(data)))


_CLASSES = {c.kind: c for c in (FaissIVF, USearchHNSW)}


def build(kind: str, embeddings: np.ndarray, ids: np.ndarray):
    if kind not in _CLASSES:
        raise ValueError(f"unknown index kind {kind!r}; one of {KINDS}")
    return _CLASSES[kind].build(embeddings, ids)


def from_bytes(kind: str, data: bytes):
    if kind not in _CLASSES:
        raise ValueError(f"unknown index kind {kind!r}; one of {KINDS}")
    return _CLASSES[kind].from_bytes(data)


@dataclass
class AnnSearcher:
    """An approximate index bound to the embeddings it was built from.

    ``covered`` are the exemplar ids in the index (sorted). Rows of ``ids`` the index does not
    cover (registered after it was last updated) are searched exactly; ids the index has but the
    store no longer does (removed since) are dropped. So a stale index costs speed, never answers.
    """

    index: object
    embeddings: np.ndarray  # float32 [N, D], the store's rows in id order
    ids: np.ndarray  # int64 [N], sorted
    covered: np.ndarray  # int64, sorted
    rerank: int = RERANK
    tail: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        pos = np.searchsorted(self.covered, self.ids)
        hit = pos < len(self.covered)
        hit[hit] = self.covered[pos[hit]] == self.ids[hit]
        self.tail = np.flatnonzero(~hit)

    @property
    def kind(self) -> str:
        return self.index.kind

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, positions)`` of the ``k`` best rows, exact similarities, best first."""
        q = np.asarray(query, np.float32).ravel()
        cand = self.index.search_ids(q, max(k, self.rerank))
        cand = cand[cand >= 0]
        pos = np.searchsorted(self.ids, cand)
        ok = pos < len(self.ids)
        ok[ok] = self.ids[pos[ok]] == cand[ok]
        pos = np.concatenate([pos[ok], self.tail])
        sims = self.embeddings[pos] @ q
        k = min(k, len(pos))
        if k < len(pos):
            part = np.argpartition(-sims, k - 1)[:k]
            pos, sims = pos[part], sims[part]
        order = np.lexsort((pos, -sims))
        return sims[order], pos[order]
