"""Folder datasets, the train/held-out split, and random training crops.

Layout (the layout of ``../shared/data``)::

    <root>/generated/<generator>/*.png
    <root>/real/<set>/*.png
    <root>/manifest.tsv            (optional: path, kind, generator, family, ...)

Images are decoded with :func:`lida_plugin.decode.decode_file` and cut with
:mod:`lida_plugin.fingerprint` (one implementation for training and serving). Unreadable files
are skipped and listed in a warning; an empty or malformed folder raises :class:`DataError`.

Split rule (deterministic, no randomness): within each class the files are ordered by
``sha256(key)`` and the first ``ceil(n/2)`` are the *train* half, the rest *held-out*. ``key``
is the file's content key: for the FFHQ-derived sets (``real/ffhq256`` and the seven
``ldm-sr-*`` classes, whose file names end in ``-<face index>``) it is ``ffhq-face-<index>``,
so one face is in the same half in every class; otherwise it is ``<class>/<file name>``.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lida_plugin.decode import decode_file
from lida_plugin.errors import InputError
from lida_plugin.fingerprint import extract_crops, resize_square

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp", ".jpg", ".jpeg"}
_FFHQ_FACE = re.compile(r"^data_ffhq_generated_img_.*-(\d+)$")


class DataError(ValueError):
    """A data folder is missing, empty or not in the expected layout."""


@dataclass
class Item:
    """One decoded image of the corpus."""

    relpath: str
    kind: str  # "generated" | "real"
    label: str  # generator name, or the real set name
    family: str
    split: str  # "train" | "heldout"
    pixels: np.ndarray  # H x W x 3 uint8


def split_key(kind: str, label: str, name: str) -> str:
    """The content key the split hashes (see the module docstring)."""
    m = _FFHQ_FACE.match(Path(name).stem)
    if m and (label.startswith("ldm-sr") or label == "ffhq256"):
        return f"ffhq-face-{int(m.group(1))}"
    return f"{label}/{name}"


def assign_split(names: list[str], kind: str, label: str) -> dict[str, str]:
    """``{name: "train"|"heldout"}`` for the files of one class: first ceil(n/2) by hash are train."""
    order = sorted(names, key=lambda n: (hashlib.sha256(split_key(kind, label, n).encode()).hexdigest(), n))
    n_train = math.ceil(len(order) / 2)
    return {n: ("train" if i < n_train else "heldout") for i, n in enumerate(order)}


def _read_manifest(root: Path) -> dict[str, str]:
    fam: dict[str, str] = {}
    man = root / "manifest.tsv"
    if man.is_file():
        lines = man.read_text(encoding="utf-8").splitlines()
        if lines:
            head = lines[0].split("\t")
            if "generator" in head and "family" in head:
                gi, fi = head.index("generator"), head.index("family")
                for line in lines[1:]:
                    cols = line.split("\t")
                    if len(cols) > max(gi, fi):
                        fam[cols[gi]] = cols[fi]
    return fam


def scan(root: str | Path) -> list[tuple[str, str, str, Path]]:
    """List ``(kind, label, family, path)`` for every image file under ``root``; no decoding."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    kinds = [k for k in ("generated", "real") if (root / k).is_dir()]
    if not kinds:
        raise DataError(
            f"{root}: malformed data folder: expected <root>/generated/<generator>/*.png and/or "
            "<root>/real/<set>/*.png, found neither 'generated/' nor 'real/'"
        )
    fam = _read_manifest(root)
    out = []
    for kind in kinds:
        for sub in sorted(p for p in (root / kind).iterdir() if p.is_dir()):
            for f in sorted(sub.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    family = "real" if kind == "real" else fam.get(sub.name, sub.name)
                    out.append((kind, sub.name, family, f))
    if not out:
        raise DataError(f"{root}: no image files in any class folder under {', '.join(kinds)}/")
    return out


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
