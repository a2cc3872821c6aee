"""Stage one: is it generated? Similarity to the real prototype against the calibrated threshold."""

from __future__ import annotations

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
