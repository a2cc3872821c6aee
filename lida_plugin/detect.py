"""Stage one: is it generated? Similarity to the real prototype against the calibrated threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .contract import ModelInfo, ai_score


@dataclass(frozen=True)
class Detection:
    ai_score: float  # sigmoid(-sim(x, p_real) / tau), in [0, 1]
    threshold: float  # calibrated on held-out real images at the model's stated FPR
    similarity_to_real: float

    @property
    def is_generated(self) -> bool:
        return self.ai_score >= self.threshold


def detect(embeddings: np.ndarray, info: ModelInfo) -> list[Detection]:
    """Detections for image embeddings ``[M, D]`` (unit rows)."""
    proto = np.asarray(info.real_prototype, dtype=np.float32)
    sims = np.asarray(embeddings, dtype=np.float32) @ proto
    scores = ai_score(sims, info.detection_temperature)
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
