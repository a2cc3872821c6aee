"""Camera demosaicing traces: is this lossless image a camera original?

A camera sees each pixel through one colour filter of a Bayer array (red, green, green, blue in a 2x2
tile) and interpolates the two missing colours ("demosaicing"). The interpolated samples are smoother
than the measured ones, so the high-pass residual of each channel is weaker at the positions where that
channel was interpolated: for red, at three of the four positions of the tile; for blue, likewise, at
the diagonally opposite ones; for green, on one of the two diagonals (a quincunx). No generator draws
that pattern (its upsampling treats the three channels alike), and downscaling erases it.

The fingerprint model was fitted on no camera original (the corpus' real photos are all resampled or
film scans), and calls most of them generated: 57-100% of held-out real photos re-mosaicked and
demosaiced by bilinear, Malvar-He-Cutler, VNG or edge-aware interpolation (docs/evaluation.md, "Camera
originals"). So an image whose residual shows the pattern is an input the model does not cover:
:func:`camera_reasons` makes it unreliable (verdict ``inconclusive``; ``--force`` gives the model's
verdict anyway), the same rule as a JPEG.

:func:`cfa_score` is the best match over the four phases of the tile: per channel, the log energy of
the 4-neighbour Laplacian residual at each of the four positions, centred on its mean; the score adds
red's excess at its measured position, blue's at the opposite one and green's on its diagonal. It is 0
for a pattern-free image and grows with the pattern's contrast.
"""

from __future__ import annotations

import numpy as np

from .fingerprint import check_crops

#: With 16 crops of 64x64, a score at or above this is a camera's demosaicing. Measured (2026-12-03) on the
#: corpus' 1,110 originals, which have no such traces: at most 0.26 (generated) and 0.13 (real); held-out images
#: re-mosaicked and demosaiced by four algorithms: 99.2-100% at or above it (docs/evaluation.md, "Camera
#: originals"). With fewer crops the score is noisier and the threshold grows as 1/sqrt(crops) (:func:`threshold`).
CFA_THRESHOLD = 0.35
CROP, CROPS, ALIGN = 64, 16, 8  # the crop grid the score is read on (lida_plugin.fingerprint.crop_grid)
MIN_CROPS = 2  # one 64x64 crop is too few to tell (originals reach 1.9 there)
_EPS = 1e-2  # grey levels squared: keeps a flat (synthetic) image's log energies finite and equal


def phase_energies(crops: np.ndarray) -> np.ndarray:
    """``float64 [3, 2, 2]``: mean squared 4-neighbour Laplacian residual of each channel at each position of
    the 2x2 tile (row parity, column parity), pooled over ``crops`` (``uint8 [K, 3, S, S]``, cut on an even grid
    so the parity is the image's)."""
    x = np.asarray(crops).astype(np.int16)
    k, c, h, w = x.shape
    e = np.multiply(x[..., 1:-1, 1:-1], 4)  # residual index i is pixel i + 1; in place: ~2x faster
    e -= x[..., :-2, 1:-1]
    e -= x[..., 2:, 1:-1]
    e -= x[..., 1:-1, :-2]
    e -= x[..., 1:-1, 2:]
    h2, w2 = (h - 2) // 2, (w - 2) // 2
    e = e[..., : 2 * h2, : 2 * w2].reshape(k, c, h2, 2, w2, 2).transpose(1, 3, 5, 0, 2, 4).reshape(c, 2, 2, -1)
    e = e.astype(np.float32)
    sq = (e * e).sum(-1, dtype=np.float64)
    return sq[:, ::-1, ::-1] / (k * h2 * w2)  # residual parity p is pixel parity 1 - p


def cfa_score(crops: np.ndarray) -> float:
    """How strongly the crops show a Bayer demosaicing pattern (module doc); 0 for none."""
    if len(crops) == 0 or crops.shape[-1] < 4 or crops.shape[-2] < 4:
        return 0.0
    v = np.log(phase_energies(crops) + _EPS)
    v -= v.mean(axis=(1, 2), keepdims=True)
    best = 0.0
    for ry in range(2):
        for rx in range(2):
            by, bx = 1 - ry, 1 - rx  # blue is measured diagonally opposite red
            green = (np.add.outer(np.arange(2), np.arange(2)) % 2) != (ry + rx) % 2  # the other diagonal
            s = (
                v[0, ry, rx] - (v[0].sum() - v[0, ry, rx]) / 3
                + v[2, by, bx] - (v[2].sum() - v[2, by, bx]) / 3
                + v[1][green].mean() - v[1][~green].mean()
            )  # fmt: skip
            best = max(best, float(s))
    return best


def threshold(n_crops: int) -> float:
    """The score threshold for ``n_crops`` crops of 64x64: :data:`CFA_THRESHOLD` at 16, times sqrt(16 / n) below
    (measured at 8 and 4 crops: no original at or above it, 78-100% of demosaiced images)."""
    return CFA_THRESHOLD * float(np.sqrt(CROPS / min(max(n_crops, 1), CROPS)))


def camera_reasons(pixels: np.ndarray, crops: np.ndarray | None = None) -> list[str]:
    """The reliability reason for a camera original (empty when the image shows no demosaicing pattern, or is
    too small to tell: fewer than :data:`MIN_CROPS` crops of 64x64 on an 8-px grid). ``crops``: the image's
    crops on that very grid (:func:`~lida_plugin.fingerprint.extract_crops` with :data:`CROP`, :data:`CROPS`,
    :data:`ALIGN`) when the caller has them already."""
    crops = check_crops(pixels, crops, CROP, CROPS, ALIGN)
    if len(crops) < MIN_CROPS:
        return []
    s, t = cfa_score(crops), threshold(len(crops))
    if s < t:
        return []
    return [
        f"camera demosaicing traces (colour-filter-array score {s:.2f} >= {t:.2f}): a camera original, a kind of"
        " photo the fingerprint model was not fitted on (it calls most of them generated)"
    ]
