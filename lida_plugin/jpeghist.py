"""JPEG history: were these lossless pixels a JPEG before?

A PNG or TIFF made from a JPEG (a converted upload, a screenshot-free "save as PNG", an archive migrating its
JPEGs to a lossless format) passes every format rule, yet its low bits were written by the JPEG codec, not by
the generator or the camera. The model bundled in 2026-12 called 98-99% of generated images that went through
a JPEG (quality 75-98) and back to PNG `real` (docs/evaluation.md, "JPEG history"): a trivial laundering path.

The codec leaves its mark in the 8x8 block DCT of the luminance: each coefficient was a multiple of its
quantisation step, so after decoding (and rounding back to 8 bits) the coefficients still sit near multiples
of that step, on both sides of them. :func:`jpeg_history_score` reads the 63 AC coefficients over the 16 serving
crops (1,024 blocks on the image's own 8-px grid): for each coefficient and candidate step q (2..16 for the seven
lowest frequencies, whose steps are large at low quality; 2..5 for the others, whose steps are still 2-5 at
quality 95-98) it takes the fractional parts of |coefficient| / q (coefficients at or above q): the share just
below a multiple (fraction >= 0.8) minus the share half-way between (0.4-0.6). A natural image's coefficients
fall off steeply, so just below a multiple is the *least* likely place (near 0 or negative); a JPEG's pile up
there. The score is the largest difference.
"""

from __future__ import annotations

import numpy as np

#: With 16 crops (1,024 blocks), a score at or above this is a JPEG's quantisation. Measured (2026-12-03) on the
#: corpus (``python -m lida_exporters.probes jpeg-scores``): generated originals at most 0.153 (868 images), FFHQ
#: and Kodak at most 0.102; held-out images saved as JPEG q75-q98 (4:2:0, and q90 4:4:4) and decoded: 98.6-100% at
#: or above it (docs/evaluation.md, "JPEG history"). Some corpus "originals" are above it, rightly: 41 of the 100
#: urban photos and 2 of the 12 Set14 images judged were JPEGs before they were cropped to PNG.
JPEG_HISTORY_THRESHOLD = 0.2
CROPS = 16  # judged only with the full crop grid (images of at least 256x256): the threshold was measured there
_LOW = [1, 8, 9, 2, 16, 10, 17]  # (0,1), (1,0), (1,1), (0,2), (2,0), (1,2), (2,1) in row-major 8x8 order
_HIGH = [k for k in range(1, 64) if k not in _LOW]
_LOW_STEPS = np.arange(2, 17, dtype=np.float32)[:, None, None]
_HIGH_STEPS = np.arange(2, 6, dtype=np.float32)[:, None, None]
_MIN_COUNT = 100  # coefficients at or above a step needed to judge it
_N = 8
_DCT = np.array(
    [[np.sqrt((1 if u == 0 else 2) / _N) * np.cos((2 * x + 1) * u * np.pi / (2 * _N)) for x in range(_N)]
     for u in range(_N)],
    dtype=np.float32,
)  # fmt: skip


def jpeg_history_score(crops: np.ndarray) -> float:
    """How strongly the luminance DCT of ``crops`` (``uint8 [K, 3, S, S]``, S a multiple of 8, cut on the image's
    8-px grid) shows a JPEG's quantisation (module doc); 0 when there are too few coefficients to tell."""
    x = np.asarray(crops, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] % 8 or x.shape[-2] % 8:
        return 0.0
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2] - 128.0  # JPEG's luma (JFIF)
    k, h, w = y.shape
    blocks = y.reshape(k, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 8, 8)
    a = np.abs((_DCT @ blocks @ _DCT.T).reshape(-1, 64))  # [blocks, 64]
    return max(_pile_up(a[:, _LOW], _LOW_STEPS), _pile_up(a[:, _HIGH], _HIGH_STEPS))


def _pile_up(a: np.ndarray, steps: np.ndarray) -> float:
    """The largest (share just below a multiple of a step) - (share half-way between) over coefficients and steps."""
    fifth = (a[None] * (5.0 / steps)).astype(np.int16)  # which fifth of a step: 0.8-1 is "4", 0.4-0.6 is "2"
    counted = fifth >= 5  # at or above the step
    fifth %= 5
    n = counted.sum(1)
    below = (counted & (fifth == 4)).sum(1)
    middle = (counted & (fifth == 2)).sum(1)
    return float(np.where(n >= _MIN_COUNT, (below - middle) / np.maximum(n, 1), 0.0).max(initial=0.0))


def jpeg_history_reasons(crops: np.ndarray) -> list[str]:
    """The reliability reason for lossless pixels that were a JPEG (empty below the threshold, or with fewer than
    :data:`CROPS` crops of the 64x64 grid)."""
    if len(crops) < CROPS:
        return []
    s = jpeg_history_score(crops)
    if s < JPEG_HISTORY_THRESHOLD:
        return []
    return [
        f"JPEG compression traces in the pixels (8x8 DCT quantisation score {s:.2f} >= {JPEG_HISTORY_THRESHOLD}):"
        " a JPEG saved again without loss; the codec, not the generator, wrote the low bits"
    ]
