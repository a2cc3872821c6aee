"""The corpus layout and the train/held-out split rule: one torch-free copy for training and evaluation.

Layout (the layout of ``../shared/data``)::

    <root>/generated/<generator>/*.png
    <root>/real/<set>/*.png
    <root>/manifest.tsv            (optional: path, kind, generator, family, ...)

Split rule (deterministic, no randomness): within each class the files are ordered by
``sha256(key)`` and the first ``ceil(n/2)`` are the *train* half, the rest *held-out*. ``key``
is the file's content key: for the FFHQ-derived sets (``real/ffhq256`` and the seven
``ldm-sr-*`` classes, whose file names end in ``-<face index>``) it is ``ffhq-face-<index>``,
so one face is in the same half in every class; otherwise it is ``<class>/<file name>``.
``exporters`` (training) and :mod:`lida_plugin.evaluate` both use this module.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

from .files import is_image_name

_FFHQ_FACE = re.compile(r"^data_ffhq_generated_img_.*-(\d+)$")


class DataError(ValueError):
    """A data folder is missing, empty or not in the expected layout."""


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
                if f.is_file() and is_image_name(f.name):
                    family = "real" if kind == "real" else fam.get(sub.name, sub.name)
                    out.append((kind, sub.name, family, f))
    if not out:
        raise DataError(f"{root}: no image files in any class folder under {', '.join(kinds)}/")
    return out
