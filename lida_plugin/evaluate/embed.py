"""Embedding sources and the robustness transforms.

* :class:`OnnxEmbedder`: a contract model through the runtime's own :class:`~lida_plugin.encoder.Encoder`
  (same crops, same graph, same image embedding as ``lida attribute``).
* :class:`RawFingerprintEmbedder`: no encoder at all. ``method="spectrum"`` (the default): the
  mean over the serving crop grid of the log amplitude spectrum of the scaled low-bit fingerprint
  (per crop and channel, mean removed), centred and L2-normalised: shift-invariant, it keeps the
  periodic up-sampling traces that tell generators apart. ``method="mean"``: the plain mean of
  the fingerprint crops. Cosine nearest neighbour on it is the "raw fingerprints" baseline.

Transforms (:data:`TRANSFORMS`) re-encode a query file in memory and decode the bytes with the
runtime's decoder, so the reliability gate sees exactly what a user's file would show it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..decode import Decoded, decode_bytes, decode_file
from ..detect import needs_noise, noise_floors
from ..errors import InputError
from ..fingerprint import extract_crops, fingerprint


class OnnxEmbedder:
    kind = "onnx"

    def __init__(self, model: str | Path | None = None, threads: int | None = None, device: str = "cpu") -> None:
        from ..encoder import Encoder

        self.encoder = Encoder(model, device=device, threads=threads)
        self.info = self.encoder.info
        self.dim = self.info.embedding_dim
        self.path = str(self.encoder.path)

    def crops(self, dec: Decoded) -> np.ndarray:
        return self.encoder.crops_for(dec)

    def embed_crop_sets(self, sets: list[np.ndarray]) -> np.ndarray:
        return self.encoder.embed_crop_sets(sets)

    def describe(self) -> dict:
        return {"kind": self.kind, "model": self.path, "model_id": self.info.model_id, "sha256": self.encoder.sha256,
                "architecture": self.info.architecture, "fingerprint_mode": self.info.fingerprint_mode,
                "crop_size": self.info.crop_size, "crop_count": self.info.crop_count,
                "input_resize": self.info.input_resize,
                "thresholds": {"detection": self.info.detection_threshold, "detection_fpr": self.info.detection_fpr,
                               "open_set": self.info.open_set_threshold},
                "training": self.info.training}  # fmt: skip


class RawFingerprintEmbedder:
    kind = "raw-fingerprint"
    info = None

    def __init__(self, crop: int = 64, count: int = 16, align: int = 8, method: str = "spectrum") -> None:
        if method not in ("spectrum", "mean"):
            raise ValueError(f"unknown raw fingerprint method {method!r}")
        self.crop, self.count, self.align, self.method = crop, count, align, method
        self.dim = 3 * crop * crop

    def crops(self, dec: Decoded) -> np.ndarray:
        return extract_crops(dec.pixels, self.crop, self.count, self.align, self.crop, dec.path)

    def embed_crop_sets(self, sets: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(sets), self.dim), dtype=np.float32)
        for i, c in enumerate(sets):
            fp = fingerprint(c, "scaled").astype(np.float32)
            fp -= fp.mean(axis=(2, 3), keepdims=True)
            if self.method == "spectrum":
                v = np.log1p(np.abs(np.fft.fft2(fp, axes=(2, 3)))).mean(axis=0).ravel()
                v -= v.mean()
            else:
                v = fp.mean(axis=0).ravel()
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
        return out

    def describe(self) -> dict:
        return {"kind": self.kind, "method": self.method, "crop": self.crop, "crop_count": self.count,
                "crop_align": self.align}  # fmt: skip


# -- transforms --------------------------------------------------------------------------------
def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(quality: int) -> Callable[[np.ndarray], bytes]:
    def f(arr: np.ndarray) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()

    return f


def _resize(factor: float) -> Callable[[np.ndarray], bytes]:
    def f(arr: np.ndarray) -> bytes:
        from PIL import Image

        h, w = arr.shape[:2]
        im = Image.fromarray(arr).resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BICUBIC)
        return _png(np.asarray(im))

    return f


def _crop_offgrid(arr: np.ndarray) -> bytes:
    """75% of each side, starting at (5, 3): pixel values kept, the 8-pixel grid phase shifted."""
    h, w = arr.shape[:2]
    return _png(np.ascontiguousarray(arr[5 : 5 + int(h * 0.75), 3 : 3 + int(w * 0.75)]))


#: name -> (group, level, function from RGB pixels to file bytes); ``none`` is the clean file.
TRANSFORMS: dict[str, tuple[str, float, Callable[[np.ndarray], bytes] | None]] = {
    "none": ("none", 0, None),
    "jpeg-q100": ("jpeg", 100, _jpeg(100)),
    "jpeg-q95": ("jpeg", 95, _jpeg(95)),
    "jpeg-q90": ("jpeg", 90, _jpeg(90)),
    "jpeg-q80": ("jpeg", 80, _jpeg(80)),
    "jpeg-q70": ("jpeg", 70, _jpeg(70)),
    "resize-0.75": ("resize", 0.75, _resize(0.75)),
    "resize-0.5": ("resize", 0.5, _resize(0.5)),
    "crop-75-offgrid": ("crop", 0.75, _crop_offgrid),
}


def load(path: str | Path, transform: str = "none") -> Decoded:
    """Decode ``path`` after ``transform`` (re-encoded in memory, decoded by the runtime's decoder)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")
    fn = TRANSFORMS[transform][2]
    dec = decode_file(path)
    if fn is None:
        return dec
    return decode_bytes(fn(dec.pixels), f"{path}[{transform}]")


def embed_paths(
    paths: list[Path], embedders: dict[str, object], transform: str = "none", chunk: int = 32, progress: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray, list[list[str]], list[str | None], dict[str, np.ndarray]]:
    """Embed ``paths`` with every embedder, decoding each file once.

    Returns ``(embeddings per embedder [N, D] with NaN rows for failures, reliable [N] bool,
    reasons [N], error [N] or None, noise floors [N] (NaN for failures) per embedder whose detection head
    reads them)``.
    """
    from tqdm import tqdm

    n = len(paths)
    embs = {name: np.full((n, e.dim), np.nan, dtype=np.float32) for name, e in embedders.items()}
    floors = {name: np.full(n, np.nan) for name, e in embedders.items() if e.info is not None and needs_noise(e.info)}
    reliable = np.zeros(n, dtype=bool)
    reasons: list[list[str]] = [[] for _ in range(n)]
    errors: list[str | None] = [None] * n
    bar = tqdm(total=n, desc=f"embed[{transform}]", unit="img", disable=not progress, mininterval=2.0)
    for start in range(0, n, chunk):
        idx = list(range(start, min(n, start + chunk)))
        decs: dict[int, Decoded] = {}
        for i in idx:
            try:
                decs[i] = load(paths[i], transform)
                reliable[i] = decs[i].reliable
                reasons[i] = list(decs[i].reasons)
            except InputError as exc:
                errors[i] = exc.reason
        for name, e in embedders.items():
            ok, sets = [], []
            for i, d in decs.items():
                try:
                    sets.append(e.crops(d))
                    ok.append(i)
                except InputError as exc:
                    errors[i] = exc.reason
            if sets:
                embs[name][ok] = e.embed_crop_sets(sets)
                if name in floors:
                    floors[name][ok] = noise_floors(sets, e.info)
        bar.update(len(idx))
    bar.close()
    return embs, reliable, reasons, errors, floors
