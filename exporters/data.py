"""Folder datasets, the train/held-out split, and random training crops.

Layout (the layout of ``../shared/data``)::

    <root>/generated/<generator>/*.png
    <root>/real/<set>/*.png
    <root>/manifest.tsv            (optional: path, kind, generator, family, ...)

Images are decoded with :func:`lida_plugin.decode.decode_file` and cut with
:mod:`lida_plugin.fingerprint` (one implementation for training and serving). Unreadable files
are skipped and listed in a warning; an empty or malformed folder raises :class:`DataError`.

The layout scan and the split rule live in :mod:`lida_plugin.dataset` (torch-free, shared with
``lida eval``); they are re-exported here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lida_plugin.dataset import DataError, assign_split, scan, split_key
from lida_plugin.decode import decode_file
from lida_plugin.errors import InputError
from lida_plugin.fingerprint import extract_crops, resize_square


@dataclass
class Item:
    """One decoded image of the corpus."""

    relpath: str
    kind: str  # "generated" | "real"
    label: str  # generator name, or the real set name
    family: str
    split: str  # "train" | "heldout"
    pixels: np.ndarray  # H x W x 3 uint8


def load_folder(
    root: str | Path,
    split: str | None = None,
    kinds: tuple[str, ...] = ("generated", "real"),
    labels: set[str] | None = None,
    min_size: int = 64,
) -> list[Item]:
    """Decode the images under ``root`` (optionally one split / some kinds / some labels).

    Files that cannot be decoded, are lossy (the low bits are not the generator's) or are
    smaller than ``min_size`` are skipped; all skipped files are listed in one warning.
    """
    root = Path(root)
    entries = scan(root)
    by_class: dict[tuple[str, str], list[str]] = {}
    for kind, label, _, f in entries:
        by_class.setdefault((kind, label), []).append(f.name)
    splits = {k: assign_split(v, *k) for k, v in by_class.items()}
    items, skipped = [], []
    for kind, label, family, f in entries:
        if kind not in kinds or (labels is not None and label not in labels):
            continue
        s = splits[(kind, label)][f.name]
        if split is not None and s != split:
            continue
        try:
            dec = decode_file(f)
        except InputError as exc:
            skipped.append(f"{f}: {exc.reason}")
            continue
        if not dec.reliable:
            skipped.append(f"{f}: {'; '.join(dec.reasons)}")
            continue
        if min(dec.pixels.shape[:2]) < min_size:
            skipped.append(f"{f}: smaller than {min_size} pixels")
            continue
        items.append(Item(str(f.relative_to(root)), kind, label, family, s, dec.pixels))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unusable file(s):\n  " + "\n  ".join(skipped), stacklevel=2)
    if not items:
        raise DataError(f"{root}: no usable images (split={split}, kinds={kinds})")
    return items


def random_crop(
    pixels: np.ndarray, size: int, rng: np.random.Generator, align: int = 8, flip: bool = True
) -> np.ndarray:
    """A random ``size`` crop starting on multiples of ``align`` (the serving phase), CHW uint8.

    With ``flip`` a horizontal flip is applied half the time (it keeps every low bit; it does
    mirror the crop's phase against an 8-pixel grid, which is why it is optional).
    """
    h, w = pixels.shape[:2]
    y = int(rng.integers(0, (h - size) // align + 1)) * align
    x = int(rng.integers(0, (w - size) // align + 1)) * align
    c = pixels[y : y + size, x : x + size, :3]
    if flip and rng.random() < 0.5:
        c = c[:, ::-1]
    return np.ascontiguousarray(c.transpose(2, 0, 1))


class CropSampler:
    """Class-balanced batches of random aligned crops from in-memory images.

    ``groups`` maps a class index to a list of ``H×W×3`` images; a batch draws a class
    uniformly, then an image, then a crop.
    """

    def __init__(self, groups: list[list[np.ndarray]], size: int, seed: int, align: int = 8, flip: bool = True):
        self.groups = [g for g in groups]
        if not self.groups or any(len(g) == 0 for g in self.groups):
            raise DataError("every class needs at least one image")
        self.size, self.align, self.flip = size, align, flip
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        ys = self.rng.integers(0, len(self.groups), n)
        xs = np.empty((n, 3, self.size, self.size), dtype=np.uint8)
        for i, y in enumerate(ys):
            g = self.groups[int(y)]
            img = g[int(self.rng.integers(0, len(g)))]
            xs[i] = random_crop(img, self.size, self.rng, self.align, self.flip)
        return xs, ys.astype(np.int64)


def eval_crops(pixels: np.ndarray, size: int, count: int, align: int = 8) -> np.ndarray:
    """The serving crops of one image (``lida_plugin.fingerprint.extract_crops``)."""
    return extract_crops(pixels, size, count, align)


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` resized to ``size x size`` as the runtime does for a model with ``input_resize``;
    ``size`` 0 returns them untouched (the native grid, every model but the authors' baseline)."""
    return resize_square(pixels, size) if size else pixels


__all__ = ["DataError", "Item", "assign_split", "load_folder", "scan", "split_key"]
