"""What a camera does to a photo, for the detection stage's training copies (numpy only).

The corpus' real photos are all resampled (FFHQ, the urban crops, Set5/14) or film scans (Kodak): not
one carries a camera's colour-filter-array (CFA) interpolation. A lossless camera original (a TIFF or PNG
from a raw converter, an archive's scan of a digital original) does, and the model bundled until
2026-12-03 called 58-100% of such real photos generated (docs/evaluation.md, "Camera processing"). A
training copy here is one draw of a camera-like chain: a Bayer mosaic re-interpolated (bilinear or
Malvar-He-Cutler, any of the four CFA phases), an unsharp mask, sensor-like Gaussian noise. A processed
photo is still real and a processed generated image still generated, so each copy keeps its label.

By default OpenCV's VNG and edge-aware demosaicing are left out of the fit: the probe measures on them
(``python -m lida_exporters.probes camera-real``), algorithms no fit saw; ``--camera-methods`` changes that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: the demosaicing methods a training copy draws from (OpenCV's ``vng`` and ``ea`` are also available)
DEMOSAIC = ("bilinear", "mhc")
_CV2_PATTERN = ("BG", "GB", "GR", "RG")  # OpenCV's Bayer code for each phase (red at (0,0), (0,1), (1,0), (1,1))


def _conv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D correlation of ``x`` [H, W] with a kernel of odd sides, reflected borders."""
    p = np.pad(x, ((k.shape[0] // 2,) * 2, (k.shape[1] // 2,) * 2), mode="reflect")
    h, w = x.shape
    out = np.zeros((h, w), np.float64)
    for dy in range(k.shape[0]):
        for dx in range(k.shape[1]):
            if k[dy, dx]:
                out += k[dy, dx] * p[dy : dy + h, dx : dx + w]
    return out


def cfa_masks(h: int, w: int, phase: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean R, G, B masks of a Bayer filter; ``phase`` 0-3 puts red at (0,0), (0,1), (1,0), (1,1)."""
    dy, dx = divmod(phase, 2)
    yy, xx = np.mgrid[0:h, 0:w]
    r = (yy % 2 == dy) & (xx % 2 == dx)
    b = (yy % 2 != dy) & (xx % 2 != dx)
    return r, ~(r | b), b


def demosaic(pixels: np.ndarray, method: str, phase: int = 0) -> np.ndarray:
    """``pixels`` (uint8 [H, W, 3]) sampled through a Bayer filter and interpolated back by ``method``
    (``bilinear``; ``mhc``: Malvar, He and Cutler 2004, gradient-corrected linear interpolation; ``vng`` and
    ``ea``: OpenCV's variable number of gradients and edge-aware demosaicing)."""
    x = pixels.astype(np.float64)
    h, w = x.shape[:2]
    rm, gm, bm = cfa_masks(h, w, phase)
    cfa = x[..., 0] * rm + x[..., 1] * gm + x[..., 2] * bm
    if method == "bilinear":
        kg = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4.0
        krb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0
        out = np.stack([_conv(cfa * rm, krb), _conv(cfa * gm, kg), _conv(cfa * bm, krb)], -1)
    elif method == "mhc":
        out = _mhc(cfa, rm, bm)
    elif method in ("vng", "ea"):
        import cv2

        code = getattr(cv2, f"COLOR_Bayer{_CV2_PATTERN[phase]}2RGB_{method.upper()}")
        return np.ascontiguousarray(cv2.cvtColor(np.clip(np.rint(cfa), 0, 255).astype(np.uint8), code))
    else:
        raise ValueError(f"unknown demosaicing method {method!r}; choose from bilinear, mhc, vng, ea")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _mhc(cfa: np.ndarray, rm: np.ndarray, bm: np.ndarray) -> np.ndarray:
    g_at_rb = np.array([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]) / 8
    row = np.array([[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]]) / 8
    diag = (
        np.array([[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]) / 8
    )
    g = np.where(rm | bm, _conv(cfa, g_at_rb), cfa)
    c_row, c_col, c_diag = _conv(cfa, row), _conv(cfa, row.T), _conv(cfa, diag)
    r_rows, r_cols = rm.any(1)[:, None], rm.any(0)[None, :]  # rows / columns that hold red samples
    b_rows, b_cols = bm.any(1)[:, None], bm.any(0)[None, :]
    r = np.where(rm, cfa, 0.0)
    r = np.where(r_rows & b_cols, c_row, r)  # green pixel in a red row: red from its row neighbours
    r = np.where(b_rows & r_cols, c_col, r)
    r = np.where(bm, c_diag, r)
    b = np.where(bm, cfa, 0.0)
    b = np.where(b_rows & r_cols, c_row, b)
    b = np.where(r_rows & b_cols, c_col, b)
    b = np.where(rm, c_diag, b)
    return np.stack([r, g, b], -1)


def unsharp(pixels: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """An unsharp mask: ``x + amount * (x - gaussian(x, sigma))``."""
    x = pixels.astype(np.float64)
    r = max(1, int(np.ceil(3 * sigma)))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    blur = np.stack([_conv(_conv(x[..., c], g[None, :]), g[:, None]) for c in range(3)], -1)
    return np.clip(np.rint(x + amount * (x - blur)), 0, 255).astype(np.uint8)


def noisy(pixels: np.ndarray, sd: float, seed: int, mono: bool = False) -> np.ndarray:
    """Gaussian noise of ``sd`` grey levels, seeded: independent per channel, or the same on all when ``mono``."""
    n = np.random.default_rng(seed).normal(0.0, sd, pixels.shape[:-1] + (1,) if mono else pixels.shape)
    return np.clip(np.rint(pixels + n), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class CameraOps:
    """One draw of the chain: demosaic (method or None, CFA phase), unsharp (amount, sigma; amount 0: none),
    noise (sd; 0: none, seeded by ``seed``)."""

    demosaic: str | None
    phase: int
    amount: float
    sigma: float
    sd: float
    seed: int

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels[..., :3])
        if self.demosaic:
            x = demosaic(x, self.demosaic, self.phase)
        if self.amount:
            x = unsharp(x, self.amount, self.sigma)
        if self.sd:
            x = noisy(x, self.sd, self.seed)
        return x

    def describe(self) -> str:
        parts = [f"demosaic-{self.demosaic}-p{self.phase}"] if self.demosaic else []
        parts += [f"unsharp-{self.amount:.2f}-{self.sigma:.2f}"] if self.amount else []
        parts += [f"noise-{self.sd:.2f}"] if self.sd else []
        return "+".join(parts)


def camera_plan(
    train_idx: Sequence[int], copies: int, seed: int = 0, methods: Sequence[str] = DEMOSAIC, noise: bool = True
) -> list[tuple[int, CameraOps]]:
    """``(item index, ops)`` of each camera-processed training copy (seeded): demosaicing by one of ``methods``
    with probability 3/4, an unsharp mask and (when ``noise``) noise with 1/2 each, at least one of them."""
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(copies):
        for i in train_idx:
            while True:
                d = str(rng.choice(list(methods))) if rng.random() < 0.75 else None
                amount = float(rng.uniform(0.3, 1.2)) if rng.random() < 0.5 else 0.0
                sd = float(rng.uniform(0.5, 3.0)) if rng.random() < 0.5 else 0.0
                sd = sd if noise else 0.0
                if d or amount or sd:
                    break
            ops = CameraOps(d, int(rng.integers(4)), amount, float(rng.uniform(0.6, 1.6)), sd, int(rng.integers(2**31)))
            plan.append((int(i), ops))
    return plan
