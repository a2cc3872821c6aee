"""Stage one: is it generated? An ``ai_score`` against the model's calibrated threshold.

The score is the model's learned detection head when its metadata carries one
(``lida.detection_head``, a logistic regression on the image embedding, contract version 2),
else the prototype score of the detection loss, ``sigmoid(-sim(x, p_real) / tau)`` (every
version-1 model). :func:`ai_scores` is the one implementation; ``lida eval`` calls it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .contract import ModelInfo, ai_score, head_score


@dataclass(frozen=True)
class Detection:
    ai_score: float  # the detection head's score, or sigmoid(-sim(x, p_real) / tau); in [0, 1]
    threshold: float  # calibrated on held-out real images at the model's stated FPR
    similarity_to_real: float

    @property
    def is_generated(self) -> bool:
        return self.ai_score >= self.threshold


def ai_scores(embeddings: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """``(ai_score [M] float64, similarity to the real prototype [M])`` for image embeddings ``[M, D]``."""
    emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    sims = emb @ np.asarray(info.real_prototype, dtype=np.float32)
    if info.detection_head:
        return np.asarray(head_score(emb, info.detection_head), dtype=np.float64), sims
    return np.asarray(ai_score(sims, info.detection_temperature), dtype=np.float64), sims


def detect(embeddings: np.ndarray, info: ModelInfo) -> list[Detection]:
    """Detections for image embeddings ``[M, D]`` (unit rows)."""
    scores, sims = ai_scores(embeddings, info)
    return [Detection(float(a), info.detection_threshold, float(s)) for a, s in zip(scores, sims, strict=True)]


def calibrate_threshold(real_scores: np.ndarray, fpr: float) -> float:
    """The detection threshold for a target false-positive rate: the smallest listed ``ai_score``
    ``t`` with at most ``fpr`` of ``real_scores >= t`` (the exporter's calibration rule, also used
    by ``lida eval`` to cross-calibrate on held-out real photos)."""
    s = np.sort(np.asarray(real_scores, dtype=np.float64))
    n = len(s)
    if n == 0:
        raise ValueError("calibration needs at least one real score")
    k = min(n - 1, math.ceil((1.0 - fpr) * n))
    t = float(s[k])
    # ties: move up until the rate holds
    while (s >= t).mean() > fpr and k < n - 1:
        k += 1
        t = float(s[k])
    return float(np.clip(np.nextafter(t, 2.0) if (s >= t).mean() > fpr else t, 0.0, 1.0))
