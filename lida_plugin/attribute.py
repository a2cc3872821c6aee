"""Attribution: decode -> crops -> embed -> detect -> retrieve -> verdict, for many files.

Verdicts (also tabled in the README):

* ``real``: the detection score is below the model's calibrated threshold.
* ``ai-generated`` with ``generator``/``family``: generated, and the nearest registered
  generator's nearest exemplar is at least the open-set threshold similar.
* ``ai-generated`` with ``generator: null``: generated, but nothing registered is near enough
  (an unregistered generator: open set).
* ``inconclusive``: the fingerprint cannot be trusted (lossy JPEG/WebP, palette, CMYK, lossless pixels
  that were a JPEG (:mod:`lida_plugin.jpeghist`) or carry a camera's demosaicing (:mod:`lida_plugin.cfa`), ...);
  ``force=True`` (``--force``) gives the verdict anyway and keeps the warning in ``reliability``.

Every result carries a ``reason`` sentence. Failures become ``status: "error"`` records that
name the file and the reason; the other files go on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from .cfa import ALIGN as CFA_ALIGN
from .cfa import CROP as CFA_CROP
from .cfa import CROPS as CFA_CROPS
from .cfa import camera_reasons
from .decode import DEFAULT_MAX_PIXELS, Decoded, decode_bytes, read_bytes
from .detect import Detection, detect, needs_noise, noise_floor
from .encoder import Encoder
from .errors import InputError, LidaError
from .evidence import apply_evidence, check_setup, read_evidence
from .fingerprint import extract_crops
from .jpeghist import jpeg_history_reasons
from .lossy import load_detector, lossy_evidence
from .noisegate import noise_reasons
from .retrieve import Neighbor, Retriever
from .store import StoreStack

log = logging.getLogger(__name__)

REAL, AI, INCONCLUSIVE = "real", "ai-generated", "inconclusive"
_END = object()  # the end of an iterator of paths


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
    exact_match: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    model_id: str | None = None
    store_id: str | None = None
    error: str | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)  # schemas/evidence-item.schema.json
    disagreement: list[dict[str, Any]] = field(default_factory=list)
    decided_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # the fields hold JSON values only: copying their containers is what asdict() does, ~6x faster
        # (asdict deep-copies every leaf; this runs once per asset in every command)
        d = {f.name: _json_copy(getattr(self, f.name)) for f in fields(self)}
        if self.status == "ok":
            d.pop("error")
        return d

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _json_copy(v: Any) -> Any:
    """A copy of a JSON-like value: new dicts, lists and tuples, the same scalars (dataclasses via asdict)."""
    if isinstance(v, dict):
        return {k: _json_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_copy(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_json_copy(x) for x in v)
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    return v


def error_result(path: str, reason: str, model_id: str | None = None, store_id: str | None = None) -> Result:
    return Result(path=path, status="error", error=reason, model_id=model_id, store_id=store_id)


@dataclass
class Prepared:
    """A file after the per-file stage (:meth:`Attributor.prepare`): decoded (pixels dropped) and cropped."""

    decoded: Decoded
    crops: np.ndarray
    evidence: list[dict[str, Any]] = field(default_factory=list)  # declared provenance, read with the bytes
    stage_inputs: np.ndarray | None = None  # the encoder's feature stage of the crops (Encoder.stage_inputs)
    noise: float | None = None  # the crops' noise floor, when the model's detection head reads it (detect.noise_floor)

    @property
    def path(self) -> str:
        return self.decoded.path

    @property
    def sha256(self) -> str:
        return self.decoded.sha256


def _noise_voids(decoded: Decoded, det: Detection) -> bool:
    """The noise gate's one-sided rule (:mod:`lida_plugin.noisegate`): a ``real`` reading of noised pixels is void."""
    return bool(decoded.masked) and not det.is_generated


def _inconclusive_reason(decoded: Decoded, det: Detection) -> str:
    if not decoded.reliable:
        return "fingerprint unreliable: " + "; ".join(decoded.reasons) + " (--force overrides)"
    return (
        f"ai_score {det.ai_score:.3f} below the threshold {det.threshold:.3f}, but not evidence of a real photo: "
        + "; ".join(decoded.masked)
        + " (--force overrides)"
    )


def verdict(
    decoded: Decoded,
    det: Detection,
    neighbors: list[Neighbor],
    open_set_threshold: float,
    force: bool,
    family_margin: float | None = None,
) -> tuple[str, str | None, str | None, float | None, str]:
    """``(verdict, generator, family, score, reason)`` from the two stages and the reliability gate.

    A generated image's nearest registered generator is named when its similarity reaches
    ``open_set_threshold``. Below it, with a ``family_margin`` (the model's ``lida.family_margin``),
    the nearest generator's family is named alone (generator ``None``) when its similarity beats the
    nearest generator of any *other* family by at least the margin; ``neighbors`` must then reach
    such a generator when one is registered (:meth:`~lida_plugin.retrieve.Retriever.rank` with
    ``other_family``). No other family in ``neighbors``: nothing to compare with, no family named.
    A ``real`` reading of pixels with ``decoded.masked`` reasons (added noise, :mod:`lida_plugin.noisegate`) is
    ``inconclusive`` unless ``force``: noise hides a generator's traces, it does not make them."""
    if not force and (not decoded.reliable or _noise_voids(decoded, det)):
        return INCONCLUSIVE, None, None, None, _inconclusive_reason(decoded, det)
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
    if best.similarity < open_set_threshold and family_margin is not None and best.family:
        other = next((n for n in neighbors if n.family != best.family), None)
        if other is not None and best.similarity - other.similarity >= family_margin:
            return (
                AI, None, best.family, det.ai_score,
                f"generated by a {best.family} model; its nearest registered generator {best.generator} is"
                f" too far to name (similarity {best.similarity:.3f} < open-set threshold {open_set_threshold:.3f}),"
                f" but the family leads the nearest other family ({other.family or other.generator},"
                f" {other.similarity:.3f}) by {best.similarity - other.similarity:.3f} >= {family_margin:.3f}",
            )  # fmt: skip
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
        if int(top_k) < 1:  # the nearest generator is the answer: k = 0 would leave none to name
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.encoder = encoder
        # the stores and their index as one value, swapped whole when the store files change (_current)
        self._snap: tuple[StoreStack, Retriever] = (stores, Retriever(stores.exemplars))
        self._reload_lock = threading.Lock()
        self.top_k = int(top_k)
        self.force = force
        self.max_pixels = max_pixels
        self.images_per_batch = max(1, images_per_batch)
        self.decode_workers = max(1, decode_workers)
        check_setup()  # a malformed user model-names file is a setup error, found before any asset
        self.lossy_detector = load_detector()  # likewise a broken detector file

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def stores(self) -> StoreStack:
        return self._snap[0]

    @property
    def retriever(self) -> Retriever:
        return self._snap[1]

    @property
    def store_id(self) -> str:
        return self.stores.store_id

    def _current(self) -> tuple[StoreStack, Retriever]:
        """The stores and index to judge with: read again when another process changed a store file since
        (a register or a remove while ``lida serve``/``lida watch``/a host runs: their verdicts used to stay
        those of the start). Two ``stat`` calls when nothing changed."""
        stores, _ = snap = self._snap
        if not stores.changed():
            return snap
        with self._reload_lock:
            stores, _ = snap = self._snap
            if not stores.changed():  # another thread reloaded meanwhile
                return snap
            try:
                fresh = stores.reopened()
            except LidaError as exc:
                log.warning("a store changed and could not be read again (%s); going on with what was read", exc)
                stores.accept_current()
                return snap
            log.info("store changed: read again (%d exemplars)", len(fresh.exemplars))
            self._snap = snap = (fresh, Retriever(fresh.exemplars))
            try:
                stores.close()
            except sqlite3.ProgrammingError:  # opened in another thread: it goes with the object
                pass
            return snap

    def prepare(self, source: str | os.PathLike[str], data: bytes | None = None) -> Prepared | Result:
        """Per-file work, safe to run in parallel threads: read (unless ``data`` is given), hash,
        decode, cut the crops, read what the file declares and score a lossy input. Never raises for
        a bad file: returns an error :class:`Result` naming the file and the reason instead. ``data``
        lets a caller that already holds the bytes (the watcher, which checks them against the
        file's stat) skip a second read."""
        path = os.fspath(source)
        try:
            if data is None:
                data = read_bytes(path)
            decoded = decode_bytes(data, path, max_pixels=self.max_pixels)
            crops = self.encoder.crops_for(decoded)
            stage_inputs = self.encoder.stage_inputs(crops)  # here: in the caller's decode threads
        except InputError as exc:
            return error_result(path, exc.reason, self.model_id, self.store_id)
        except MemoryError:
            return error_result(path, "out of memory while decoding", self.model_id, self.store_id)
        except Exception as exc:  # a decoder bug on one odd file must not stop the run
            log.debug("unexpected failure on %s", path, exc_info=True)
            return error_result(
                path, f"unexpected decoding failure: {type(exc).__name__}: {exc}", self.model_id, self.store_id
            )
        evidence = read_evidence(path, decoded, data=data)  # what the file declares (C2PA, XMP, EXIF, text)
        grid = self._history_crops(decoded, crops)  # lossless pixels: what was done to them before?
        if grid is not None and (jpeg := jpeg_history_reasons(grid)):  # a JPEG once: the lossy detector applies
            decoded.jpeg_history, decoded.reliable = True, False
            decoded.reasons += jpeg
        try:  # lossy inputs only: a measured score on the pixels, its own piece of evidence
            lossy = lossy_evidence(decoded, self.lossy_detector)
        except Exception:  # a bug there must not cost the file its record: the item is left out
            log.warning("lossy detector failed on %s", path, exc_info=True)
            lossy = None
        if lossy is not None:
            evidence.append(lossy)
        if grid is not None and decoded.reliable:  # a camera original; after the lossy detector (not a codec's)
            decoded.reasons += camera_reasons(decoded.pixels, grid)
            decoded.reliable = not decoded.reasons
        noise = noise_floor(crops, self.encoder.info)  # what the detection head reads besides the embedding
        if grid is not None and decoded.reliable:  # noise that would hide a generator: only 'real' is void
            decoded.masked = noise_reasons(decoded.pixels, grid, noise if grid is crops else None)
        # Keep the shape (width/height) but not the pixels: the crops are all the later stages need,
        # and a batch of prepared files waiting for the encoder must not hold whole images.
        decoded.pixels = np.broadcast_to(np.zeros((), np.uint8), decoded.pixels.shape)
        return Prepared(decoded, crops, evidence, stage_inputs, noise)

    def _history_crops(self, decoded: Decoded, crops: np.ndarray) -> np.ndarray | None:
        """The crops the pixel-history checks read (:mod:`lida_plugin.jpeghist`, :mod:`lida_plugin.cfa`: 64x64, up
        to 16, on the 8-px grid): the model's own when its grid is that one, else cut here; None for a file the
        format rules already distrust, or smaller than one crop."""
        if not decoded.reliable:
            return None
        i = self.encoder.info
        if (i.crop_size, i.crop_count, i.crop_align, i.input_resize) == (CFA_CROP, CFA_CROPS, CFA_ALIGN, 0):
            return crops
        h, w = decoded.pixels.shape[:2]
        return extract_crops(decoded.pixels, CFA_CROP, CFA_CROPS, CFA_ALIGN) if min(h, w) >= CFA_CROP else None

    def finish(self, batch: Sequence[Prepared | Result]) -> list[Result]:
        """The batch stages (embed, detect, retrieve, verdict) for what :meth:`prepare` returned, in
        order; error results pass through. An encoder failure turns the batch's files into error
        records (the other files of a run go on); it never raises."""
        todo = [p for p in batch if isinstance(p, Prepared)]
        try:
            done = iter(self._judge(todo))
        except Exception as exc:  # an encoder failure must not lose the other records
            log.exception("encoder failed on a batch")
            done = iter([error_result(p.path, f"encoder failed: {exc}", self.model_id, self.store_id) for p in todo])
        return [b if isinstance(b, Result) else next(done) for b in batch]

    def _judge(self, items: list[Prepared]) -> list[Result]:
        if not items:
            return []
        emb = self.encoder.embed_crop_sets([p.crops for p in items], [p.stage_inputs for p in items])
        noise = [p.noise for p in items] if needs_noise(self.encoder.info) else None
        dets = detect(emb, self.encoder.info, noise)
        stores, retriever = self._current()
        ranked = retriever.rank(emb, self.top_k, other_family=self.encoder.info.family_margin is not None)
        return [
            self._result(p, det, neigh, stores) for p, det, neigh in zip(items, dets, ranked, strict=True)
        ]  # fmt: skip

    def _result(self, p: Prepared, det: Detection, neigh: list[Neighbor], stores: StoreStack) -> Result:
        dec = p.decoded
        info = self.encoder.info
        v, gen, fam, score, reason = verdict(dec, det, neigh, info.open_set_threshold, self.force, info.family_margin)
        known = self._exact_match(dec.sha256, stores)
        void = _noise_voids(dec, det)
        if known is not None:
            reason += (
                f"; these exact bytes are a registered exemplar of {known['generator']}"
                " (a self-match: the verdict is not an independent judgement)"
            )
        result = Result(
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
                **({} if det.noise_floor is None else {"noise_floor": round(det.noise_floor, 4)}),
            },
            neighbors=[
                {
                    "generator": n.generator,
                    "family": n.family,
                    "similarity": round(n.similarity, 6),
                    "exemplar": n.exemplar,
                }
                for n in neigh[: self.top_k]  # (a further one of another family is for the verdict only)
            ],  # fmt: skip
            reliability={
                "reliable": dec.reliable and not void,
                "forced": self.force and (not dec.reliable or void),
                "reasons": list(dec.reasons) + (list(dec.masked) if void else []),
                "notes": list(dec.notes)
                + ([] if void else [f"{m}; the 'ai-generated' reading stands" for m in dec.masked]),  # fmt: skip
            },
            exact_match=known,
            image={
                "format": dec.format,
                "mode": dec.mode,
                "width": dec.width,
                "height": dec.height,
                "sha256": dec.sha256,
                "crops": int(len(p.crops)),
            },
            model_id=self.model_id,
            store_id=self.store_id,
        )
        return apply_evidence(result, p.evidence)

    @staticmethod
    def _exact_match(sha256: str, stores: StoreStack) -> dict[str, Any] | None:
        """The registered exemplar with these very bytes (``generator``, ``family``, ``exemplar``, ``store_id``)."""
        i = stores.exact_match(sha256)
        if i is None:
            return None
        ex = stores.exemplars
        return {"generator": ex.generators[i], "family": ex.families[i], "exemplar": ex.sources[i],
                "store_id": ex.store_ids[i]}  # fmt: skip

    def attribute_paths(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[Result]:
        """Attribute files in order, decoding ahead in threads and embedding in batches."""
        ahead = 2 * self.images_per_batch  # bounded read-ahead: memory stays flat on huge inputs
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="lida-decode") as pool:
            pending: deque[Future] = deque()
            chunk: list[Prepared | Result] = []
            it = iter(paths)
            while True:  # a sentinel, not None: a None among the paths must get its record, not end the run
                while len(pending) < ahead and (p := next(it, _END)) is not _END:
                    if isinstance(p, str | os.PathLike):
                        pending.append(pool.submit(self.prepare, p))
                    else:
                        bad = error_result(repr(p), f"not a path: {type(p).__name__}", self.model_id, self.store_id)
                        pending.append(pool.submit(lambda r=bad: r))
                if not pending:
                    break
                chunk.append(pending.popleft().result())
                if len(chunk) >= self.images_per_batch:
                    yield from self.finish(chunk)
                    chunk = []
            yield from self.finish(chunk)

    def attribute_file(self, path: str | os.PathLike[str]) -> Result:
        return next(self.attribute_paths([path]))
