"""Low-bit fingerprints and the deterministic crop policy.

The encoder graph applies the fingerprint itself (see :mod:`lida_plugin.contract`); this
module holds the same operation in numpy, for the store (which keeps ``x & 7`` crops so a new
model can re-embed without the original images), for the raw-fingerprint baseline and for
parity tests. Both forms are single vectorised passes over ``uint8`` data:

* ``scaled`` (the authors' code): ``(x & 7) * 36`` -> values 0..252
* ``binary`` (the paper's formula): ``255 * (x & 7 != 0)`` -> values 0 or 255
* ``rgb``: the pixels themselves (a baseline, no fingerprint)

Crops are cut from the full-resolution grid, never resampled: resizing rewrites the low bits.
The one exception is :func:`resize_square`, for a model that declares ``lida.input_resize``
(the authors' configuration, kept as an evaluation baseline to show what resizing costs).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

LOW_BITS_MASK = 7
SCALE = 36


def lowbits(pixels: np.ndarray) -> np.ndarray:
    """The lowest three bit planes of every sample (``x & 7``), as ``uint8``."""
    return np.bitwise_and(np.asarray(pixels, dtype=np.uint8), LOW_BITS_MASK)


def fingerprint(pixels: np.ndarray, mode: str = "scaled") -> np.ndarray:
    """The fingerprint image of ``pixels`` (any shape, ``uint8``) in ``mode``, as ``uint8``."""
    if mode == "rgb":
        return np.asarray(pixels, dtype=np.uint8)
    low = lowbits(pixels)
    if mode == "scaled":
        return np.multiply(low, SCALE, out=low)
    if mode == "binary":
        return np.multiply(low != 0, 255, dtype=np.uint8)
    raise ValueError(f"unknown fingerprint mode {mode!r}")


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` (``H×W×3`` uint8) resized to ``size × size``, bilinear with antialiasing
    (Pillow; what ``torchvision.transforms.Resize((size, size))`` does to a PIL image)."""
    from PIL import Image

    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    im = Image.fromarray(np.ascontiguousarray(pixels[..., :3], dtype=np.uint8))
    return np.asarray(im.resize((size, size), Image.BILINEAR))


def require_size(pixels: np.ndarray, floor: int, name: str = "image") -> None:
    """Raise :class:`InputError` naming ``name`` when either side of ``pixels`` is below ``floor``."""
    h, w = pixels.shape[:2]
    if h < floor or w < floor:
        raise InputError(name, f"image is {w}x{h}, smaller than the model's minimum of {floor}x{floor} pixels")


def _axis_offsets(length: int, size: int, n: int, align: int) -> list[int]:
    """``n`` crop starts along one axis, evenly spread over ``length``, multiples of ``align``."""
    last = (length - size) // align * align  # last aligned start that still fits
    if n == 1:
        return [(last // 2) // align * align]
    return sorted({int(round(i * last / (n - 1) / align)) * align for i in range(n)})


def crop_grid(height: int, width: int, size: int, count: int, align: int = 8) -> list[tuple[int, int]]:
    """Deterministic crop positions ``(y, x)`` for an image of ``height × width``.

    A grid of up to ``g × g`` crops, ``g = ceil(sqrt(count))``, fewer along an axis that has
    room for fewer non-overlapping crops; starts are multiples of ``align`` (so every crop
    keeps the same phase against a generator's 8-pixel upsampling grid), spread evenly from
    the first to the last position, then cut to ``count`` crops nearest the centre.
    Raises :class:`ValueError` if the image is smaller than ``size``.
    """
    if height < size or width < size:
        raise ValueError(f"{width}x{height} is smaller than one {size}x{size} crop")
    g = int(np.ceil(np.sqrt(count)))
    ny = max(1, min(g, height // size))
    nx = max(1, min(g, width // size))
    ys = _axis_offsets(height, size, ny, align)
    xs = _axis_offsets(width, size, nx, align)
    grid = [(y, x) for y in ys for x in xs]
    if len(grid) > count:
        cy, cx = (height - size) / 2, (width - size) / 2
        grid = sorted(grid, key=lambda p: ((p[0] - cy) ** 2 + (p[1] - cx) ** 2, p))[:count]
        grid.sort()
    return grid


def extract_crops(
    pixels: np.ndarray, size: int, count: int, align: int = 8, min_size: int | None = None, name: str = "image"
) -> np.ndarray:
    """Cut the crop grid out of an ``H×W×3`` image; returns ``uint8 [K, 3, size, size]``.

    Raises :class:`InputError` naming ``name`` when the image is below ``min_size``.
    """
    require_size(pixels, max(size, min_size or size), name)
    h, w = pixels.shape[:2]
    pos = crop_grid(h, w, size, count, align)
    out = np.empty((len(pos), 3, size, size), dtype=np.uint8)
    for i, (y, x) in enumerate(pos):
        out[i] = pixels[y : y + size, x : x + size, :3].transpose(2, 0, 1)
    return out


def check_crops(pixels: np.ndarray, crops: np.ndarray | None, size: int, count: int, align: int) -> np.ndarray:
    """The crops a pixel check reads (:mod:`lida_plugin.cfa`, :mod:`lida_plugin.noisegate`): ``crops`` when the
    caller has them on that grid already, else cut from ``pixels``; none (an empty array) for an image smaller than
    one crop."""
    if crops is not None:
        return crops
    if min(pixels.shape[:2]) < size:
        return np.zeros((0, 3, size, size), np.uint8)
    return extract_crops(pixels, size, count, align)
