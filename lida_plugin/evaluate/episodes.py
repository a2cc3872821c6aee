"""Seeded k-shot episodes: per class, k gallery (registration) images, the rest are queries.

Two protocols (``split``):

* ``heldout`` (the default, for any model trained on this corpus, the shipped one included):
  the gallery is drawn from a class's **train** half, the queries are its whole **held-out**
  half (the same queries for every k and seed, so numbers across k compare). No query was ever
  seen in training. A class needs ``k`` train images and one held-out image.
* ``all`` (for a model that never saw this corpus, or no model at all): the gallery is drawn from
  all of a class's images and every other image of the class is a query. A class needs ``k + 1``.

Draws: per ``(seed, class)`` one permutation of the class's gallery pool (pool sorted by path,
``numpy.random.default_rng([seed, crc32(class)])``); the k-shot gallery is its first k images,
so galleries are nested across k and identical for every run with that seed. Classes without
enough images for a k are listed in ``skipped`` with their counts and are then neither
registered nor queried at that k.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .corpus import Entry

SPLITS = ("heldout", "all")


@dataclass
class Episode:
    k: int
    seed: int
    split: str
    classes: list[str]  # classes evaluated (registered and queried)
    gallery: list[int]  # indices into the entry list
    queries: list[int]
    skipped: dict[str, str] = field(default_factory=dict)  # class -> reason

    def gallery_labels(self, entries: list[Entry]) -> list[str]:
        return [entries[i].label for i in self.gallery]

    def query_labels(self, entries: list[Entry]) -> list[str]:
        return [entries[i].label for i in self.queries]


def pools(entries: list[Entry], split: str) -> dict[str, tuple[list[int], list[int]]]:
    """``{class: (gallery pool, query pool)}``; in ``all`` both pools are the whole class."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    by: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by.setdefault(e.label, []).append(i)
    out = {}
    for lab, idx in sorted(by.items()):
        idx = sorted(idx, key=lambda i: entries[i].relpath)
        if split == "heldout":
            out[lab] = (
                [i for i in idx if entries[i].split == "train"],
                [i for i in idx if entries[i].split == "heldout"],
            )
        else:
            out[lab] = (idx, idx)
    return out


def class_order(seed: int, label: str, pool: list[int]) -> list[int]:
    rng = np.random.default_rng([int(seed), zlib.crc32(label.encode())])
    return [pool[i] for i in rng.permutation(len(pool))]


def make_episode(
    entries: list[Entry], k: int, seed: int, split: str = "heldout", labels: list[str] | None = None
) -> Episode:
    """The ``k``-shot episode for ``seed`` (see the module doc); ``labels`` limits the classes."""
    if k < 1:
        raise ValueError("k must be >= 1")
    ep = Episode(k=k, seed=seed, split=split, classes=[], gallery=[], queries=[])
    for lab, (gpool, qpool) in pools(entries, split).items():
        if labels is not None and lab not in labels:
            continue
        if split == "heldout":
            if len(gpool) < k or not qpool:
                ep.skipped[lab] = f"needs {k} train + 1 held-out image, has {len(gpool)} + {len(qpool)}"
                continue
            gal = class_order(seed, lab, gpool)[:k]
            qs = list(qpool)
        else:
            if len(gpool) < k + 1:
                ep.skipped[lab] = f"needs {k + 1} images, has {len(gpool)}"
                continue
            gal = class_order(seed, lab, gpool)[:k]
            chosen = set(gal)
            qs = [i for i in qpool if i not in chosen]
        ep.classes.append(lab)
        ep.gallery += gal
        ep.queries += qs
    return ep
