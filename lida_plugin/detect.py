"""Stage one: is it generated? An ``ai_score`` against the model's calibrated threshold.

The score is the model's learned detection head when its metadata carries one
(``lida.detection_head``, a logistic regression on the image embedding, contract version 2; a head of
version 2 also reads the image's colour noise floor, :func:`noise_floors`), else the prototype score of the
detection loss, ``sigmoid(-sim(x, p_real) / tau)`` (every version-1 model). :func:`ai_scores` is the one
implementation; ``lida eval`` calls it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .contract import ModelInfo, ai_score, head_needs_noise, head_score
from .noisegate import noise_score


@dataclass(frozen=True)
class Detection:
    ai_score: float  # the detection head's score, or sigmoid(-sim(x, p_real) / tau); in [0, 1]
    threshold: float  # calibrated on held-out real images at the model's stated FPR
    similarity_to_real: float
    noise_floor: float | None = None  # what a version-2 head read besides the embedding (noise_floor); else None

    @property
    def is_generated(self) -> bool:
        return self.ai_score >= self.threshold


def needs_noise(info: ModelInfo) -> bool:
    """Whether the model's detection head reads the images' noise floor (:func:`noise_floors`)."""
    return head_needs_noise(info.detection_head)


def noise_floor(crops: np.ndarray, info: ModelInfo) -> float | None:
    """What the model's detection head reads besides the embedding: the colour noise floor of the crops the
    model reads (:func:`lida_plugin.noisegate.noise_score`), or None for a head that reads none."""
    return noise_score(crops) if needs_noise(info) else None


def noise_floors(crop_sets: Sequence[np.ndarray], info: ModelInfo) -> np.ndarray | None:
    """:func:`noise_floor` of each image's crops, ``[M]`` float64, or None for a head that reads none."""
    return np.array([noise_score(c) for c in crop_sets], dtype=np.float64) if needs_noise(info) else None


def ai_scores(embeddings: np.ndarray, info: ModelInfo, noise: Sequence[float] | np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(ai_score [M] float64, similarity to the real prototype [M])`` for image embeddings ``[M, D]``;
    ``noise``: their :func:`noise_floors`, required when the model's head reads them."""
    emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    sims = emb @ np.asarray(info.real_prototype, dtype=np.float32)
    if info.detection_head:
        return np.asarray(head_score(emb, info.detection_head, noise), dtype=np.float64), sims
    return np.asarray(ai_score(sims, info.detection_temperature), dtype=np.float64), sims


def detect(embeddings: np.ndarray, info: ModelInfo, noise: Sequence[float] | np.ndarray | None = None
           ) -> list[Detection]:  # fmt: skip
    """Detections for image embeddings ``[M, D]`` (unit rows); ``noise`` as for :func:`ai_scores`."""
    scores, sims = ai_scores(embeddings, info, noise)
    floors = [None] * len(scores) if noise is None or not needs_noise(info) else [float(n) for n in noise]
    return [Detection(float(a), info.detection_threshold, float(s), n)
            for a, s, n in zip(scores, sims, floors, strict=True)]  # fmt: skip


def fpr_upper_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen ``k`` times in ``n`` draws: the ``u``
    with ``P(Binomial(n, u) <= k) = 1 - confidence`` (bisection; exact to 1e-9)."""
    if k >= n:
        return 1.0

    def cdf(u: float) -> float:
        if u <= 0.0:
            return 1.0
        if u >= 1.0:
            return 0.0
        lu, l1u = math.log(u), math.log1p(-u)
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lu + (n - i) * l1u)
                   for i in range(k + 1))  # fmt: skip

    lo, hi = 0.0, 1.0
    while hi - lo > 1e-9:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) > 1.0 - confidence else (lo, mid)
    return hi


def calibrate_threshold(real_scores: np.ndarray, fpr: float, confidence: float = 0.0) -> float:
    """The detection threshold for a target false-positive rate (the exporter's calibration rule, also
    used by ``lida eval`` to cross-calibrate on held-out real photos).

    ``confidence = 0``: the smallest listed ``ai_score`` ``t`` with at most ``fpr`` of
    ``real_scores >= t`` (the point estimate: on new real photos the rate exceeds ``fpr`` about half
    the time). ``confidence = c > 0``: the smallest listed ``t`` whose count ``k`` of real scores
    ``>= t`` keeps the one-sided ``c`` upper bound on the rate (:func:`fpr_upper_bound`) at or below
    ``fpr``, so the stated rate holds with confidence ``c``; when even ``k = 0`` cannot (too few
    photos: fewer than ``log(1 - c) / log(1 - fpr)``), the threshold lies just above every real score.
    """
    s = np.sort(np.asarray(real_scores, dtype=np.float64))
    n = len(s)
    if n == 0:
        raise ValueError("calibration needs at least one real score")
    if confidence:
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        # the most real scores that may reach the threshold: the largest k whose bound is <= fpr (the bound
        # grows with k, so a binary search); 0 when even k = 0 is above it
        lo, hi = 0, n - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fpr_upper_bound(mid, n, confidence) <= fpr else (lo, mid - 1)
        allowed = lo
        fpr = (allowed + 0.5) / n  # at most `allowed` scores at or above, without float trouble at the quantile
    k = min(n - 1, math.ceil((1.0 - fpr) * n))
    t = float(s[k])
    # ties: move up until the rate holds
    while (s >= t).mean() > fpr and k < n - 1:
        k += 1
        t = float(s[k])
    return float(np.clip(np.nextafter(t, 2.0) if (s >= t).mean() > fpr else t, 0.0, 1.0))
