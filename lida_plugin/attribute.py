"""Attribution: decode -> crops -> embed -> detect -> retrieve -> verdict, for many files.

Verdicts (also tabled in the README):

* ``real``: the detection score is below the model's calibrated threshold.
* ``ai-generated`` with ``generator``/``family``: generated, and the nearest registered
  generator's nearest exemplar is at least the open-set threshold similar.
* ``ai-generated`` with ``generator: null``: generated, but nothing registered is near enough
  (an unregistered generator: open set).
* ``inconclusive``: the fingerprint cannot be trusted (lossy JPEG/WebP, palette, CMYK, ...);
  ``force=True`` (``--force``) gives the verdict anyway and keeps the warning in ``reliability``.

Every result carries a ``reason`` sentence. Failures become ``status: "error"`` records that
name the file and the reason; the other files go on.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .decode import DEFAULT_MAX_PIXELS, Decoded, decode_file
from .detect import Detection, detect
from .encoder import Encoder
from .errors import InputError
from .evidence import apply_evidence, check_setup, read_evidence
from .retrieve import Neighbor, Retriever
from .store import StoreStack

log = logging.getLogger(__name__)

REAL, AI, INCONCLUSIVE = "real", "ai-generated", "inconclusive"


@dataclass
class Result:
    """One image's attribution; :meth:`to_dict` is the JSON record (``schemas/attribution-result.schema.json``)."""

    path: str
    status: str = "ok"
    verdict: str | None = None
    generator: str | None = None
    family: str | None = None
    score: float | None = None
    reason: str | None = None
    detection: dict[str, float] | None = None
    neighbors: list[dict[str, Any]] = field(default_factory=list)
    reliability: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    model_id: str | None = None
    store_id: str | None = None
    error: str | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)  # schemas/evidence-item.schema.json
    disagreement: list[dict[str, Any]] = field(default_factory=list)
    decided_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.status == "ok":
            d.pop("error")
        return d

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def error_result(path: str, reason: str, model_id: str | None = None, store_id: str | None = None) -> Result:
    return Result(path=path, status="error", error=reason, model_id=model_id, store_id=store_id)


def verdict(
    decoded: Decoded, det: Detection, neighbors: list[Neighbor], open_set_threshold: float, force: bool
) -> tuple[str, str | None, str | None, float | None, str]:
    """``(verdict, generator, family, score, reason)`` from the two stages and the reliability gate."""
    if not decoded.reliable and not force:
        return (
            INCONCLUSIVE,
            None,
            None,
            None,
            "fingerprint unreliable: " + "; ".join(decoded.reasons) + " (--force overrides)",
        )
    if not det.is_generated:
        return (
            REAL,
            None,
            None,
            1.0 - det.ai_score,
            f"ai_score {det.ai_score:.3f} below the threshold {det.threshold:.3f}",
        )
    if not neighbors:
        return AI, None, None, det.ai_score, "generated; no generator is registered"
    best = neighbors[0]
    if best.similarity < open_set_threshold:
        return (
            AI, None, None, det.ai_score,
            f"generated; nearest registered generator {best.generator} is too far"
            f" (similarity {best.similarity:.3f} < open-set threshold {open_set_threshold:.3f})",
        )  # fmt: skip
    return (
        AI, best.generator, best.family, det.ai_score,
        f"generated; nearest registered generator {best.generator} (similarity {best.similarity:.3f})",
    )  # fmt: skip


class Attributor:
    """Attributes images with one encoder session and one store stack (thread-safe for reads)."""

    def __init__(
        self,
        encoder: Encoder,
        stores: StoreStack,
        *,
        top_k: int = 5,
        force: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        images_per_batch: int = 8,
        decode_workers: int = 2,
    ) -> None:
        self.encoder = encoder
        self.stores = stores
        self.retriever = Retriever(stores.exemplars)
        self.top_k = top_k
        self.force = force
        self.max_pixels = max_pixels
        self.images_per_batch = max(1, images_per_batch)
        self.decode_workers = max(1, decode_workers)
        check_setup()  # a malformed user model-names file is a setup error, found before any asset

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def store_id(self) -> str:
        return self.stores.store_id

    def _prepare(self, path: str) -> tuple[Decoded, np.ndarray] | Result:
        try:
            decoded = decode_file(path, max_pixels=self.max_pixels)
            return decoded, self.encoder.crops_for(decoded)
        except InputError as exc:
            return error_result(path, exc.reason, self.model_id, self.store_id)
        except MemoryError:
            return error_result(path, "out of memory while decoding", self.model_id, self.store_id)
        except Exception as exc:  # a decoder bug on one odd file must not stop the run
            log.debug("unexpected failure on %s", path, exc_info=True)
            return error_result(
                path, f"unexpected decoding failure: {type(exc).__name__}: {exc}", self.model_id, self.store_id
            )

    def attribute_decoded(self, items: list[tuple[Decoded, np.ndarray]]) -> list[Result]:
        """Attribute already decoded images (with their crops) in one batch."""
        if not items:
            return []
        emb = self.encoder.embed_crop_sets([c for _, c in items])
        dets = detect(emb, self.encoder.info)
        ranked = self.retriever.rank(emb, self.top_k)
        out = []
        for (dec, crops), det, neigh in zip(items, dets, ranked, strict=True):
            v, gen, fam, score, reason = verdict(dec, det, neigh, self.encoder.info.open_set_threshold, self.force)
            out.append(
                Result(
                    path=dec.path,
                    verdict=v,
                    generator=gen,
                    family=fam,
                    score=None if score is None else round(float(score), 6),
                    reason=reason,
                    detection={
                        "ai_score": round(det.ai_score, 6),
                        "threshold": round(det.threshold, 6),
                        "similarity_to_real": round(det.similarity_to_real, 6),
                    },
                    neighbors=[
                        {
                            "generator": n.generator,
                            "family": n.family,
                            "similarity": round(n.similarity, 6),
                            "exemplar": n.exemplar,
                        }
                        for n in neigh
                    ],
                    reliability={
                        "reliable": dec.reliable,
                        "forced": self.force and not dec.reliable,
                        "reasons": list(dec.reasons),
                        "notes": list(dec.notes),
                    },  # fmt: skip
                    image={
                        "format": dec.format,
                        "mode": dec.mode,
                        "width": dec.width,
                        "height": dec.height,
                        "sha256": dec.sha256,
                        "crops": int(len(crops)),
                    },  # fmt: skip
                    model_id=self.model_id,
                    store_id=self.store_id,
                )
            )
        return [apply_evidence(r, read_evidence(d.path, d)) for r, (d, _) in zip(out, items, strict=True)]

    def attribute_paths(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[Result]:
        """Attribute files in order, decoding ahead in threads and embedding in batches."""
        ahead = 2 * self.images_per_batch  # bounded read-ahead: memory stays flat on huge inputs
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="lida-decode") as pool:
            pending: deque[Future] = deque()
            chunk: list[tuple[Decoded, np.ndarray] | Result] = []
            it = iter(paths)
            while True:
                while len(pending) < ahead and (p := next(it, None)) is not None:
                    pending.append(pool.submit(self._prepare, str(p)))
                if not pending:
                    break
                chunk.append(pending.popleft().result())
                if len(chunk) >= self.images_per_batch:
                    yield from self._flush(chunk)
                    chunk = []
            yield from self._flush(chunk)

    def _flush(self, chunk: list[tuple[Decoded, np.ndarray] | Result]) -> list[Result]:
        todo = [c for c in chunk if not isinstance(c, Result)]
        try:
            done = iter(self.attribute_decoded(todo))
        except Exception as exc:  # an encoder failure must not lose the other records
            log.exception("encoder failed on a batch")
            done = iter([error_result(d.path, f"encoder failed: {exc}", self.model_id, self.store_id) for d, _ in todo])
        return [c if isinstance(c, Result) else next(done) for c in chunk]

    def attribute_file(self, path: str | os.PathLike[str]) -> Result:
        return next(self.attribute_paths([path]))
