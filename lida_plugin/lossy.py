"""The lossy-input detector: a generated-vs-real score for images whose low-bit fingerprint is gone.

JPEG (and lossy WebP/AVIF/HEIC, JPEG in TIFF) re-quantises every pixel, so the fingerprint the
encoder reads is not the generator's any more and attribution stays ``inconclusive``
(:mod:`lida_plugin.decode`). This module still gives a *detection* score for such files: SPAM
residual statistics (:func:`lida_plugin.residual.spam_features`) through a standardiser and a
logistic regression trained on JPEG/resized copies of both classes (``lida-train lossy``,
:mod:`lida_exporters.lossy`), with a threshold calibrated on held-out real photos.

The fitted parameters live in ``lida_plugin/data/lossy-detector.json`` (schema
``schemas/lossy-detector.schema.json``), with the AUC measured per quality band on the held-out
half of the corpus and, as the estimate for generators the detector never saw, with each
generator family left out of training. ``calibrated`` is true only when both clear
:data:`VERDICT_AUC` at JPEG q85, it catches :data:`VERDICT_TPR` of the held-out generated images there,
and its false-positive rate holds on real photos of a kind it never saw (:func:`verdict_misses`);
otherwise the score is reported as a hint (``calibrated: false``).

:func:`lossy_evidence` returns the record's evidence item (source ``lossy-detector``) for a
decoded lossy input, or ``None`` where the detector does not apply. The degradations used to
train and to evaluate it (:func:`degrade`, :data:`BANDS`) are defined here once, for
``lida_exporters.lossy`` and ``lida eval`` alike. Torch-free.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .decode import Decoded, decode_bytes
from .errors import ModelError
from .residual import _spam_blocks, spam_features

FORMAT = "lida-lossy-detector"
VERSION = 1
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "lossy-detector.json"
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "lossy-detector.schema.json"
#: the AUC (held-out and leave-family-out, JPEG q85) a detector needs to act as a verdict
VERDICT_AUC = 0.85
#: the band whose AUCs decide ``calibrated``
VERDICT_BAND = "q85"
#: ... and the share of generated images it must catch there at its threshold (held-out): below it, a score
#: under the threshold says little (the product's detection bar: FPR <= 5% at TPR >= 90%)
VERDICT_TPR = 0.9
#: ... and the false-positive rate on photos of a kind it never saw (leave-real-set-out, pooled) may be at
#: most this multiple of its stated rate
VERDICT_UNSEEN_REAL_FPR = 2.0
#: containers whose pixels went through a lossy codec when :mod:`.decode` marks them unreliable
LOSSY_FORMATS = {"JPEG", "MPO", "WEBP", "AVIF", "HEIF", "HEIC", "JPEG2000", "JXL", "TIFF"}
#: formats the detector was trained on (others get the score with a note in ``value``)
TRAINED_FORMATS = {"JPEG", "MPO"}
FIELD = "pixels: SPAM residual statistics, logistic regression trained on JPEG/resized copies"


# -- features ------------------------------------------------------------------------------------
def centre_crop(pixels: np.ndarray, max_side: int, align: int = 8) -> np.ndarray:
    """The centre ``min(side, max_side)`` window of each side, starting on a multiple of ``align``
    (the JPEG 8x8 block grid keeps its phase); ``max_side`` 0 returns the image unchanged."""
    if not max_side:
        return pixels
    h, w = pixels.shape[:2]
    ch, cw = min(h, max_side), min(w, max_side)
    y = ((h - ch) // 2) // align * align
    x = ((w - cw) // 2) // align * align
    return pixels[y : y + ch, x : x + cw]


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (JPEG's Y) rounded to ``uint8``."""
    px = np.asarray(rgb, dtype=np.float32)
    y = 0.299 * px[..., 0] + 0.587 * px[..., 1] + 0.114 * px[..., 2]
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def spam_y(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """SPAM on the luma channel only: the straight then the diagonal block, ``2 (2T+1)^3`` values."""
    return _spam_blocks(luma(rgb)[None], T).reshape(-1).astype(np.float32)


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` ``uint8``: JPEG's Y, Cb and Cr, in libjpeg's 16-bit fixed point (``jccolor.c``: what a
    JPEG encoder stores before subsampling; Pillow's ``convert("YCbCr")`` differs by at most 1), integer
    arithmetic only."""
    px = np.asarray(rgb)
    r, g, b = (px[..., c].astype(np.int32) for c in range(3))
    half, off = 1 << 15, 128 << 16
    y = (19595 * r + 38470 * g + 7471 * b + half) >> 16
    cb = (-11059 * r - 21709 * g + 32768 * b + off + half - 1) >> 16
    cr = (32768 * r - 27439 * g - 5329 * b + off + half - 1) >> 16
    return np.stack([y, cb, cr]).astype(np.uint8)


def half_scale(channel: np.ndarray) -> np.ndarray:
    """A channel's 2x2 block means, rounded (``uint8``): the scale where JPEG's quantisation has left
    more of the residual's texture than at full resolution."""
    h, w = (channel.shape[0] // 2) * 2, (channel.shape[1] // 2) * 2
    c = channel[:h, :w].astype(np.uint16)
    s = c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def spam_ycc(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """SPAM on Y, Cb and Cr: ``3 x 2 (2T+1)^3`` values (luma first, as :func:`spam_y`)."""
    return _spam_blocks(ycbcr(rgb), T).reshape(-1).astype(np.float32)


def spam_y2(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """SPAM on the luma at full and at half resolution: ``2 x 2 (2T+1)^3`` values."""
    y = luma(rgb)
    return np.concatenate([_spam_blocks(y[None], T).reshape(-1), _spam_blocks(half_scale(y)[None], T).reshape(-1)]
                          ).astype(np.float32)  # fmt: skip


def spam_ycc2(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """:func:`spam_ycc` and the half-resolution luma block of :func:`spam_y2`: ``4 x 2 (2T+1)^3`` values."""
    c = ycbcr(rgb)
    return np.concatenate([_spam_blocks(c, T).reshape(-1), _spam_blocks(half_scale(c[0])[None], T).reshape(-1)]
                          ).astype(np.float32)  # fmt: skip


def spam_ycch(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """SPAM on the luma at full resolution and on Cb and Cr at half (:func:`half_scale`: the grid 4:2:0
    chroma is stored on): ``3 x 2 (2T+1)^3`` values."""
    c = ycbcr(rgb)
    half = np.stack([half_scale(c[1]), half_scale(c[2])])
    return np.concatenate([_spam_blocks(c[:1], T).reshape(-1), _spam_blocks(half, T).reshape(-1)]).astype(np.float32)


def spam_ycd(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """SPAM on the luma and on the colour differences R - G and B - G (the bundled encoder's colour
    channels): ``3 x 2 (2T+1)^3`` values."""
    x = np.asarray(rgb).astype(np.int16)
    ch = np.stack([luma(rgb).astype(np.int16), x[..., 0] - x[..., 1], x[..., 2] - x[..., 1]])
    return _spam_blocks(ch, T).reshape(-1).astype(np.float32)


def spam_yccd(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """:func:`spam_ycc` then the two colour-difference blocks of :func:`spam_ycd`: ``5 x 2 (2T+1)^3``."""
    x = np.asarray(rgb).astype(np.int16)
    ch = np.concatenate([ycbcr(rgb).astype(np.int16), np.stack([x[..., 0] - x[..., 1], x[..., 2] - x[..., 1]])])
    return _spam_blocks(ch, T).reshape(-1).astype(np.float32)


#: feature name -> function of (H x W x 3 uint8 pixels, T)
FEATURES = {"spam-rgb": spam_features, "spam-y": spam_y, "spam-ycc": spam_ycc, "spam-y2": spam_y2,
            "spam-ycc2": spam_ycc2, "spam-ycch": spam_ycch, "spam-ycd": spam_ycd, "spam-yccd": spam_yccd}  # fmt: skip


def features(pixels: np.ndarray, feature: str = "spam-rgb", T: int = 3, max_side: int = 0) -> np.ndarray:
    """The detector's input vector for an ``H x W x 3`` ``uint8`` image."""
    if feature not in FEATURES:
        raise ValueError(f"unknown lossy-detector feature {feature!r}; known: {', '.join(FEATURES)}")
    return FEATURES[feature](np.ascontiguousarray(centre_crop(pixels, max_side)), T)


# -- degradations (training and evaluation) ------------------------------------------------------
def jpeg_bytes(pixels: np.ndarray, quality: int, subsampling: int = 2) -> bytes:
    """``pixels`` saved by Pillow as JPEG at ``quality``; ``subsampling`` 0 = 4:4:4, 2 = 4:2:0."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="JPEG", quality=int(quality),
                                                       subsampling=int(subsampling))  # fmt: skip
    return buf.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def resized(pixels: np.ndarray, factor: float, method: str = "bicubic", min_side: int = 1) -> np.ndarray:
    """``pixels`` scaled by ``factor`` with Pillow (``bicubic``, ``bilinear``, ``lanczos``, ``box`` or
    ``hamming``), each side at least ``min_side``."""
    from PIL import Image

    methods = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "box": Image.BOX,
               "hamming": Image.HAMMING}  # fmt: skip
    h, w = pixels.shape[:2]
    size = (max(min_side, round(w * factor)), max(min_side, round(h * factor)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize(size, methods[method]))


@dataclass(frozen=True)
class Degradation:
    """Optional resize, then JPEG at ``quality`` (``None``: saved as PNG)."""

    resize: float | None = None
    quality: int | None = None
    subsampling: int = 2
    method: str = "bicubic"

    def apply(self, pixels: np.ndarray, name: str = "image") -> Decoded:
        """Re-encode in memory and decode with the runtime's decoder (what a user's file would give)."""
        px = resized(pixels, self.resize, self.method) if self.resize else pixels
        data = png_bytes(px) if self.quality is None else jpeg_bytes(px, self.quality, self.subsampling)
        return decode_bytes(data, f"{name}[{self.describe()}]")

    def describe(self) -> str:
        parts = [f"resize-{self.resize}-{self.method}"] if self.resize else []
        if self.quality is not None:
            parts.append(f"jpeg-q{self.quality}-{'444' if self.subsampling == 0 else '420'}")
        return "+".join(parts) or "png"


#: the evaluation bands: band -> its degradations (AUC pools the scores of a band's degradations)
BANDS: dict[str, tuple[Degradation, ...]] = {
    "q95": (Degradation(quality=95, subsampling=2), Degradation(quality=95, subsampling=0)),
    "q85": (Degradation(quality=85, subsampling=2), Degradation(quality=85, subsampling=0)),
    "q75": (Degradation(quality=75, subsampling=2), Degradation(quality=75, subsampling=0)),
    "resize-0.75": (Degradation(resize=0.75),),
    "resize-0.5": (Degradation(resize=0.5),),
    "resize-0.5+q85": (Degradation(resize=0.5, quality=85, subsampling=2),),
}


def quality_band(quality: int | None) -> str | None:
    """The evaluation band nearest an estimated JPEG quality (``None`` when unknown)."""
    if quality is None:
        return None
    return min(("q95", "q85", "q75"), key=lambda b: abs(int(b[1:]) - quality))


# -- the detector --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossyDetector:
    feature: str
    T: int
    max_side: int
    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: float
    threshold: float
    fpr: float
    calibrated: bool
    auc: dict = field(default_factory=dict)  # band -> {"heldout": x, "leave_family_out": y, ...}
    path: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict, path: str = "") -> LossyDetector:
        _validate(d, path)
        p = d["parameters"]
        mean, scale, w = (np.asarray(p[k], dtype=np.float64) for k in ("mean", "scale", "w"))
        if not (len(mean) == len(scale) == len(w) == d["dim"]):
            raise ModelError(f"{path}: lossy detector: mean/scale/w lengths differ from dim {d['dim']}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(w)) and np.all(scale > 0)):
            raise ModelError(f"{path}: lossy detector: non-finite parameters or a non-positive scale")
        auc = d["auc"]
        missed = verdict_misses(d)
        if d["calibrated"] and missed:
            raise ModelError(f"{path}: lossy detector says calibrated but {'; '.join(missed)}")
        return cls(d["feature"], int(d["T"]), int(d["max_side"]), mean, scale, w, float(p["b"]),
                   float(d["threshold"]), float(d["fpr"]), bool(d["calibrated"]), auc, path, d)  # fmt: skip

    def features(self, pixels: np.ndarray) -> np.ndarray:
        return features(pixels, self.feature, self.T, self.max_side)

    def score_features(self, f: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for feature rows ``[N, D]`` (or one vector)."""
        z = (np.asarray(f, dtype=np.float64) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.w + self.b)))

    def score(self, pixels: np.ndarray) -> float:
        return float(self.score_features(self.features(pixels)))


def verdict_misses(d: dict) -> list[str]:
    """What keeps a detector file from verdict grade (``calibrated: true``); empty when nothing does. The
    rule: at :data:`VERDICT_BAND`, held-out and leave-family-out AUC >= :data:`VERDICT_AUC` and held-out TPR
    at the threshold >= :data:`VERDICT_TPR`; photos of an unseen real set flagged (``leave_real_set_out``,
    pooled) at most :data:`VERDICT_UNSEEN_REAL_FPR` x ``fpr``."""
    band = (d.get("auc") or {}).get(VERDICT_BAND) or {}
    out = []
    for k, what in (("heldout", "held-out"), ("leave_family_out", "leave-family-out")):
        if (band.get(k) or 0.0) < VERDICT_AUC:
            out.append(f"{what} AUC at {VERDICT_BAND} {band.get(k)} < {VERDICT_AUC}")
    if (band.get("tpr_at_threshold") or 0.0) < VERDICT_TPR:
        out.append(f"held-out TPR at the threshold at {VERDICT_BAND} {band.get('tpr_at_threshold')} < {VERDICT_TPR}")
    lro = d.get("leave_real_set_out") or {}
    bar = VERDICT_UNSEEN_REAL_FPR * float(d.get("fpr") or 0.0)
    if lro.get("pooled_fpr") is None or lro["pooled_fpr"] > bar:
        out.append(f"photos of an unseen real set flagged {lro.get('pooled_fpr')} > {bar:g}")
    return out


def _validate(d: dict, path: str) -> None:
    """The checks of ``schemas/lossy-detector.schema.json`` that loading relies on (no jsonschema at run time)."""

    def bad(where: str, what: str) -> ModelError:
        return ModelError(f"{path}: not a valid lossy detector file at {where}: {what}")

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for k in ("format", "version", "feature", "T", "max_side", "dim", "parameters", "threshold", "fpr", "calibrated",
              "auc", "recipe", "recipe_hash"):  # fmt: skip
        if k not in d:
            raise bad("(top level)", f"{k!r} is a required property")
    if d["format"] != FORMAT or d["version"] != VERSION:
        raise bad("format", f"expected format {FORMAT!r} version {VERSION}, got {d['format']!r} {d['version']!r}")
    for k, lo in (("T", 1), ("max_side", 0), ("dim", 1)):
        if not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < lo:
            raise bad(k, f"must be an integer >= {lo}")
    p = d["parameters"]
    if not isinstance(p, dict) or not all(k in p for k in ("mean", "scale", "w", "b")):
        raise bad("parameters", "needs mean, scale, w and b")
    for k in ("mean", "scale", "w"):
        if not isinstance(p[k], list) or not all(number(v) for v in p[k]):
            raise bad(f"parameters/{k}", "must be a list of finite numbers")
    if not all(v > 0 for v in p["scale"]):
        raise bad("parameters/scale", "every scale must be > 0")
    if not number(p["b"]):
        raise bad("parameters/b", "must be a finite number")
    if not number(d["threshold"]) or not 0.0 <= d["threshold"] <= 1.0:
        raise bad("threshold", "must be a number in [0, 1]")
    if not number(d["fpr"]) or not 0.0 < d["fpr"] < 1.0:
        raise bad("fpr", "must be a number in (0, 1)")
    if not isinstance(d["calibrated"], bool):
        raise bad("calibrated", "must be true or false")
    auc = d["auc"]
    if not isinstance(auc, dict) or VERDICT_BAND not in auc:
        raise bad("auc", f"must be an object with a {VERDICT_BAND!r} band")
    for band, v in auc.items():
        if not isinstance(v, dict) or "heldout" not in v:
            raise bad(f"auc/{band}", "must be an object with 'heldout'")
        for k in ("heldout", "leave_family_out"):
            x = v.get(k)
            if x is not None and (not number(x) or not 0.0 <= x <= 1.0):
                raise bad(f"auc/{band}/{k}", "must be null or a number in [0, 1]")
    if d["feature"] not in FEATURES:
        raise ModelError(f"{path}: lossy detector feature {d['feature']!r} is not one this runtime computes")


def load_detector(path: str | Path | None = None) -> LossyDetector:
    """Load (and validate) a detector parameter file; default: the bundled one."""
    p = Path(path) if path is not None else DEFAULT_PATH
    return _load_cached(str(p.resolve()))


@lru_cache(maxsize=4)
def _load_cached(path: str) -> LossyDetector:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: lossy detector file not found (make it with `lida-train lossy`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the lossy detector file: {exc}") from None
    if not isinstance(d, dict):
        raise ModelError(f"{path}: not a valid lossy detector file: top level is not an object")
    return LossyDetector.from_dict(d, path)


def applies(decoded: Decoded) -> bool:
    """True for inputs whose fingerprint a lossy codec destroyed (the detector's domain)."""
    return (not decoded.reliable) and (decoded.format in LOSSY_FORMATS or decoded.jpeg_history)


def lossy_evidence(decoded: Decoded, detector: LossyDetector | None = None) -> dict | None:
    """The ``lossy-detector`` evidence item for a lossy input, ``None`` where the detector does
    not apply (a reliable fingerprint, or an unreliable but not lossy input such as a palette PNG)."""
    if not applies(decoded):
        return None
    det = detector if detector is not None else load_detector()
    s = det.score(decoded.pixels)
    band = quality_band(decoded.jpeg_quality) if decoded.format in ("JPEG", "MPO") else None
    auc = det.auc.get(band or "all", {}).get("heldout")
    hit = s >= det.threshold
    value = f"score {s:.3f} {'>=' if hit else '<'} threshold {det.threshold:.3f}"
    if band:
        value += f"; JPEG quality ~{decoded.jpeg_quality} (band {band})"
    if decoded.jpeg_history:
        value += f"; JPEG-compressed pixels in a {decoded.format} file"
    elif decoded.format not in TRAINED_FORMATS:
        value += f"; {decoded.format} was not in the training set"
    if not det.calibrated:
        value += "; a hint only (AUC below the verdict bar on unseen generators)"
    item = {
        "source": "lossy-detector",
        "claim": "ai-generated" if hit else "not-detected",
        "generator": None,
        "family": None,
        "name": None,
        "bound": False,
        "measured": True,
        "field": FIELD,
        "value": value[:200],
        "score": round(s, 6),
        "threshold": det.threshold,
        "calibrated": det.calibrated,
    }
    if auc is not None and not math.isnan(auc):
        item["auc"] = round(float(auc), 4)
    return item
