"""Stage two: which registered generator is nearest? Cosine kNN over the exemplar store.

:func:`make_index` picks the search backend behind one interface: exact numpy matrix products
for small stores, and faiss (``pip install faiss-cpu``; an exact inner-product index, so the
answers do not change) once a store passes :data:`FAISS_FROM` exemplars.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .store import Exemplars

log = logging.getLogger(__name__)

FAISS_FROM = 100_000


@dataclass(frozen=True)
class Neighbor:
    """A registered generator, ranked by its nearest exemplar."""

    generator: str
    family: str | None
    similarity: float
    exemplar: str


class NumpyIndex:
    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, ids)``, each ``[M, k]``, best first."""
        sims = np.asarray(queries, np.float32) @ self.embeddings.T
        k = min(k, sims.shape[1])
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


class FaissIndex:
    def __init__(self, embeddings: np.ndarray) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(np.ascontiguousarray(embeddings, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.index.ntotal))


def make_index(embeddings: np.ndarray, faiss_from: int = FAISS_FROM):
    if len(embeddings) >= faiss_from:
        try:
            return FaissIndex(embeddings)
        except ImportError:
            log.warning("store has %d exemplars; install faiss-cpu for faster search", len(embeddings))
    return NumpyIndex(embeddings)


class Retriever:
    """Ranks registered generators for query embeddings."""

    def __init__(self, exemplars: Exemplars, faiss_from: int = FAISS_FROM) -> None:
        self.exemplars = exemplars
        self.index = make_index(exemplars.embeddings, faiss_from) if len(exemplars) else None

    def rank(self, queries: np.ndarray, top_k: int = 5, depth: int = 256) -> list[list[Neighbor]]:
        """Per query, up to ``top_k`` generators ordered by their nearest exemplar's similarity.

        ``depth`` exemplars are retrieved per query, deepened until ``top_k`` distinct
        generators are seen or the store is exhausted.
        """
        if self.index is None or top_k < 1:
            return [[] for _ in range(len(queries))]
        ex = self.exemplars
        n = len(ex)
        out: list[list[Neighbor]] = []
        for q in np.atleast_2d(queries):
            d = min(depth, n)
            while True:
                sims, ids = self.index.search(q[None, :], d)
                ranked: dict[str, Neighbor] = {}
                for s, i in zip(sims[0], ids[0], strict=True):
                    g = ex.generators[i]
                    if g not in ranked:
                        ranked[g] = Neighbor(g, ex.families[i], float(s), ex.sources[i])
                if len(ranked) >= top_k or d >= n:
                    break
                d = min(n, d * 4)
            out.append(list(ranked.values())[:top_k])
        return out
