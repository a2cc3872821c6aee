"""Added noise: is this lossless image's colour noise floor too high for a ``real`` reading to mean anything?

Light noise is the cheapest way to hide a generator: Gaussian noise of 1.5-2 grey levels on a generated PNG
made the fingerprint model call it ``real`` 85-98% of the time (docs/evaluation.md, "Light noise"), because the
noise swamps the residual statistics the model reads, and noisy residuals are what its real photos have. A
generator's traces survive noise or they do not; noise does not create them. So the rule is one-sided: when the
image carries more noise than the corpus' generated originals show, a ``real`` reading is not evidence and the
verdict is ``inconclusive`` (reason "added noise"; ``--force`` gives the model's verdict), while an
``ai-generated`` reading stands.

:func:`noise_score` estimates, in grey levels, the standard deviation of noise that is independent in the three
channels, from the colour differences R - G and B - G, where natural content largely cancels (a scene's edges and
textures are in all three channels; so are a decoder's, which writes the channels from shared features) and
independent noise does not (its variance doubles). On each difference image, the 3x3 residual of Immerkaer's
fast noise estimator ([1, -2, 1] by [1, -2, 1], which a linear ramp leaves at zero and white noise of variance
v leaves at 36 v), pooled in 8x8 blocks; the score is the square root of a low quantile of the blocks'
variances (:data:`QUANTILE`) divided by 72 (the two differences' noise gain): the noise floor of the image's
flattest colour regions. It is about the noise's sd for added per-channel noise, and small for an image
without it. Noise that is the same in all three channels cancels in the differences and is not seen here; the
model's colour-difference statistics do not see it either (docs/evaluation.md).
"""

from __future__ import annotations

import numpy as np

from .fingerprint import check_crops

#: With up to 16 crops of 64x64, a score at or above this (grey levels) is more channel-independent noise than any
#: held-out generated original shows (at most 0.88); 2.5% of the held-out real originals reach it, generated images
#: with noise of sd 1.5 99.5%. Measured (2026-12-07, ``python -m lida_exporters.probes noise-real``):
#: docs/evaluation.md, "Light noise".
NOISE_THRESHOLD = 1.1
QUANTILE = 0.1  # the blocks' variance quantile that is the floor (the flattest tenth of the image)
CROP, CROPS, ALIGN = 64, 16, 8  # the crop grid the score is read on (lida_plugin.fingerprint.crop_grid)
BLOCK = 8


def noise_score(crops: np.ndarray) -> float:
    """Estimated sd (grey levels) of channel-independent noise in ``crops`` (``uint8 [K, 3, S, S]``); module doc."""
    x = np.asarray(crops)
    if x.ndim != 4 or len(x) == 0 or x.shape[1] < 3 or min(x.shape[-2:]) < BLOCK + 2:
        return 0.0
    x = x.astype(np.int16)
    d = np.empty((x.shape[0], 2, *x.shape[2:]), np.int16)  # R - G, B - G: |d| <= 255
    np.subtract(x[:, 0], x[:, 1], out=d[:, 0])
    np.subtract(x[:, 2], x[:, 1], out=d[:, 1])
    r = d[..., :-2] + d[..., 2:]  # [1, -2, 1] along rows ...
    r -= d[..., 1:-1]
    r -= d[..., 1:-1]
    e = r[..., :-2, :] + r[..., 2:, :]  # ... and columns: |e| <= 16 * 255, fits int16
    e -= r[..., 1:-1, :]
    e -= r[..., 1:-1, :]
    k, _, h, w = e.shape
    bh, bw = h // BLOCK, w // BLOCK
    e = e[..., : bh * BLOCK, : bw * BLOCK].astype(np.float32)
    np.square(e, out=e)
    blocks = e.reshape(k, 2, bh, BLOCK, bw, BLOCK).sum(axis=(1, 3, 5)).astype(np.float64)
    var = blocks.ravel() / (2 * BLOCK * BLOCK * 72.0)  # per block: the noise variance under the module's model
    return float(np.sqrt(np.quantile(var, QUANTILE)))


def noise_reasons(pixels: np.ndarray, crops: np.ndarray | None = None, score: float | None = None) -> list[str]:
    """The reason a ``real`` reading of this image is not evidence (empty when its colour noise floor is below
    :data:`NOISE_THRESHOLD`, or it is smaller than one crop). ``crops``: the image's crops on the gate's grid
    (:func:`~lida_plugin.fingerprint.extract_crops` with :data:`CROP`, :data:`CROPS`, :data:`ALIGN`) when the
    caller has them already; ``score``: their :func:`noise_score` when the caller has that too."""
    s = noise_score(check_crops(pixels, crops, CROP, CROPS, ALIGN)) if score is None else score  # 0: no crops
    if s < NOISE_THRESHOLD:
        return []
    return [
        f"added noise (colour noise floor {s:.2f} >= {NOISE_THRESHOLD:.2f} grey levels): noise hides a generator's"
        " traces, so a 'real' reading of this image is not evidence"
    ]
