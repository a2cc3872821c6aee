"""Stage two: which registered generator is nearest? Cosine kNN over the exemplar store.

:func:`make_index` searches exactly (numpy matrix products; faiss' exact flat index was measured
no faster, ``docs/scale.md``). A store of :data:`lida_plugin.ann.EXACT_BELOW` exemplars or more
carries a persisted approximate index (``lida store index``; :mod:`lida_plugin.ann`): the
retriever then searches each store's rows with its index (exact re-ranking of the candidates, so
the similarities are exact) and the rest exactly, and merges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .ann import MAX_DEPTH
from .store import Exemplars

log = logging.getLogger(__name__)

FAISS_FROM = None
"""No longer used by default: exact faiss was no faster than numpy (docs/scale.md)."""


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


def make_index(embeddings: np.ndarray, faiss_from: int | None = None):
    """Exact search: numpy, or faiss' flat index when ``faiss_from`` is given and reached."""
    if faiss_from is not None and len(embeddings) >= faiss_from:
        try:
            return FaissIndex(embeddings)
        except ImportError:
            log.warning("store has %d exemplars; install faiss-cpu for faster search", len(embeddings))
    return NumpyIndex(embeddings)


class SegmentedIndex:
    """Rows from several stores: each store's approximate index for its rows (exact where a
    store has none), merged by exact similarity. With an approximate index the deepening of
    :meth:`Retriever.rank` stops at :data:`lida_plugin.ann.MAX_DEPTH` neighbours."""

    def __init__(self, exemplars: Exemplars) -> None:
        self.embeddings = exemplars.embeddings
        self.segments = exemplars.segments

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims_out, ids_out = [], []
        for q in np.atleast_2d(np.asarray(queries, np.float32)):
            sims, pos = [], []
            for seg in self.segments:
                if seg.ann is not None:
                    s, p = seg.ann.search(q, k)
                else:
                    rows = seg.embeddings
                    if rows is None:
                        rows = self.embeddings[seg.start : seg.start + seg.length]
                    s, p = NumpyIndex(rows).search(q[None, :], k)
                    s, p = s[0], p[0]
                sims.append(s)
                pos.append(p + seg.start)
            s, p = np.concatenate(sims), np.concatenate(pos)
            order = np.lexsort((p, -s))[:k]
            sims_out.append(s[order])
            ids_out.append(p[order])
        width = min(len(x) for x in ids_out)
        return np.stack([x[:width] for x in sims_out]), np.stack([x[:width] for x in ids_out])


class Retriever:
    """Ranks registered generators for query embeddings."""

    def __init__(self, exemplars: Exemplars, faiss_from: int | None = FAISS_FROM) -> None:
        self.exemplars = exemplars
        self.index = None
        if len(exemplars):
            segs = exemplars.segments
            self.index = SegmentedIndex(exemplars) if segs else make_index(exemplars.embeddings, faiss_from)
        self.max_depth = MAX_DEPTH if isinstance(self.index, SegmentedIndex) else None

    def rank(
        self, queries: np.ndarray, top_k: int = 5, depth: int = 256, other_family: bool = False
    ) -> list[list[Neighbor]]:
        """Per query, up to ``top_k`` generators ordered by their nearest exemplar's similarity.

        ``depth`` exemplars are retrieved per query, deepened until ``top_k`` distinct
        generators are seen or the store is exhausted. With ``other_family``, when those ``top_k``
        all share the first one's family (``None`` counts as a family of its own), the search goes on
        to the nearest generator of another family and appends it (``top_k + 1`` entries): the
        comparison :func:`lida_plugin.attribute.verdict` needs to name a family alone.
        """
        if self.index is None or top_k < 1:
            return [[] for _ in range(len(queries))]
        ex = self.exemplars
        n = len(ex)
        out: list[list[Neighbor]] = []
        limit = n if self.max_depth is None else min(n, self.max_depth)
        for q in np.atleast_2d(queries):
            d = min(depth, limit)
            while True:
                sims, ids = self.index.search(q[None, :], d)
                ranked: dict[str, Neighbor] = {}
                extra: Neighbor | None = None
                for s, i in zip(sims[0], ids[0], strict=True):
                    g = ex.generators[i]
                    if g in ranked:
                        continue
                    if len(ranked) < top_k:
                        ranked[g] = Neighbor(g, ex.families[i], float(s), ex.sources[i])
                    elif ex.families[i] != next(iter(ranked.values())).family:
                        extra = Neighbor(g, ex.families[i], float(s), ex.sources[i])
                    if _ranked_enough(ranked, extra, top_k, other_family):
                        break  # best first: what is collected is final
                if _ranked_enough(ranked, extra, top_k, other_family) or d >= limit:
                    break
                d = min(limit, d * 4)
            out.append(list(ranked.values())[:top_k] + ([extra] if extra is not None else []))
        return out


def _ranked_enough(ranked: dict[str, Neighbor], extra: Neighbor | None, top_k: int, other_family: bool) -> bool:
    """``top_k`` generators seen, and with ``other_family`` one of a family other than the first's."""
    if len(ranked) < top_k:
        return False
    if not other_family or extra is not None:
        return True
    first = next(iter(ranked.values())).family
    return any(nb.family != first for nb in ranked.values())
