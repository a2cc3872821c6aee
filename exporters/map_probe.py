"""Map probe: four changes to how the bundled model's features (``spam+spamc``, per 64x64 crop) are mapped
and compared, each scored on ``lida eval``'s episodes (held-out split, 5 seeds) like
:mod:`lida_exporters.feature_probe` (whose ``spam+spamc`` row the first row here reproduces).

    python -m lida_exporters.map_probe [--power 0.5] [--alpha 0.25,0.5,0.75,1]

Rows (Rank-1, class-averaged, all classes and named generators, at 1 / 5 / 10 shots; the map is the
within-class whitening of :func:`lida_exporters.spam_model.fit_map`, PCA 256, eps 0.01, 128 axes, no
detection column):

* ``baseline``: the features as the bundled recipe z-scores them;
* ``power P``: every SPAM probability raised to ``P`` before the z-score (power normalisation, the
  Hellinger map for histogram features), then the same map;
* ``centred``: the image embeddings minus their train-split mean, normalised again (the "CL2N" of
  few-shot learning) — with the baseline map and with ``power P``;
* ``exemplars on 64 crops``: the gallery's embeddings from 64 crops an image (the whole 512² image)
  and the queries' from the serving grid's 16, same map; ``64 / 64``: both sides on 64 crops;
* ``image-level scatter A``: the within-class scatter the whitening inverts is ``(1 - A)`` times the
  crops' (each normalised by its trace) plus ``A`` times that of the train images' mean features,
  i.e. the variation between images of one generator that retrieval by image means actually sees.

Features come from ``runs/cache`` (:func:`lida_exporters.spam_model.corpus_features`, and the
``spamc`` feature of the feature probe; the 64-crop ones are computed on first use, ~4 min).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from lida_plugin.evaluate.corpus import families, load_corpus
from lida_plugin.evaluate.episodes import make_episode
from lida_plugin.evaluate.metrics import scope_average
from lida_plugin.evaluate.run import episode_scores

from . import feature_probe as fp
from .spam_model import SpamRecipe, _eig_desc, apply_map, corpus_features, fit_map, image_embeddings
from .train import DEFAULT_DATA


def zscore_blocks(blocks: list[np.ndarray], fit_rows: np.ndarray, others: list[list[np.ndarray]] = ()):
    """The feature probe's normalisation: each block z-scored on ``fit_rows`` and divided by the square
    root of its width, blocks side by side; ``others``: more sets of the same blocks (e.g. other crops
    of the same images), normalised with the same statistics."""
    outs: list[list[np.ndarray]] = [[] for _ in range(1 + len(others))]
    for j, f in enumerate(blocks):
        mu, sd = f[fit_rows].mean(0), f[fit_rows].std(0)
        sd = np.where(sd > 1e-8, sd, 1.0)
        for o, src in zip(outs, [blocks, *others], strict=True):
            o.append((src[j] - mu) / sd / np.sqrt(f.shape[1]))
    res = [np.hstack(o).astype(np.float32) for o in outs]
    return res[0] if not others else res


def fit_mixed_scatter(
    x: np.ndarray, crop_labels: np.ndarray, owner: np.ndarray, alpha: float, r: SpamRecipe = SpamRecipe()
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, proj)`` like :func:`fit_map` (``standardize=False``) on the crops ``x`` of some images,
    with the within-class scatter ``(1 - alpha) W_crops / tr + alpha W_images / tr``, where ``W_images``
    is the within-class scatter of the images' mean crop features (``owner``: each crop's image index).
    ``alpha = 0`` gives ``fit_map``'s projection."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(crop_labels)
    mu = x.mean(0)
    z = x - mu
    _, v = _eig_desc(np.cov(z.T))
    pca = v[:, : r.pca_dim]
    p = z @ pca

    def within(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        w = np.zeros((points.shape[1], points.shape[1]))
        for c in np.unique(labels):
            d = points[labels == c] - points[labels == c].mean(0)
            w += d.T @ d
        return w / len(points)

    images, first = np.unique(owner, return_index=True)
    means = np.stack([p[owner == i].mean(0) for i in images])
    w1, w2 = within(p, y), within(means, y[first])
    w = (1 - alpha) * w1 / np.trace(w1) + (alpha * w2 / np.trace(w2) if alpha else 0.0)
    ev, u = _eig_desc(w)
    wh = u @ np.diag(1.0 / np.sqrt(ev + r.eps * ev[0])) @ u.T
    _, v2 = _eig_desc(np.cov((p @ wh).T))
    return mu.astype(np.float32), (pca @ wh @ v2[:, : r.dim]).astype(np.float32)


def centred(emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Image embeddings minus their mean over ``rows``, unit length again."""
    e = emb - emb[rows].mean(0)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lida_exporters.map_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--power", type=float, default=0.5, help="the power of the 'power P' rows (default 0.5)")
    ap.add_argument("--alpha", default="0.25,0.5,0.75,1", help="image-level scatter weights (default 0.25,0.5,0.75,1)")
    ap.add_argument("--no-64", action="store_true", help="leave out the 64-crop rows (their features take ~4 min)")
    args = ap.parse_args(argv)
    ents = load_corpus(DEFAULT_DATA)
    fam = families(ents)
    train = np.array([e.split == "train" for e in ents])

    def features(n: int):
        fp.GEOM = dataclasses.replace(SpamRecipe(colour=False), crop_count=n)
        crops, spam, counts = corpus_features(ents, fp.GEOM, fp.CACHE, progress=False)
        return spam, fp.feature("spamc", crops, spam), counts

    spam, spamc, counts = features(16)
    owner = np.repeat(np.arange(len(ents)), counts)
    ct = train[owner]
    labels = np.array(["real" if ents[i].kind == "real" else ents[i].label for i in owner])
    r = SpamRecipe()

    def row(name: str, gallery: np.ndarray, queries: np.ndarray | None = None) -> None:
        cells = []
        for k in (1, 5, 10):
            rs = [episode_scores(ents, gallery, make_episode(ents, k, s), fam, qemb=queries) for s in range(5)]
            cells.append((np.mean([e["rank1_class_avg"] for e in rs]), np.mean([scope_average(e["per_class"], "named")
                                                                               for e in rs])))  # fmt: skip
        print(f"| {name} | " + " / ".join(f"{100 * c[0]:.1f}" for c in cells) + " | "
              + " / ".join(f"{100 * c[1]:.1f}" for c in cells) + " |", flush=True)  # fmt: skip

    def embed(x: np.ndarray, mean: np.ndarray, proj: np.ndarray, n=counts) -> np.ndarray:
        return image_embeddings(apply_map(x, mean, proj), n)

    print("| variant | Rank-1 1 / 5 / 10-shot, all | named |\n|---|---|---|", flush=True)
    x = zscore_blocks([spam, spamc], ct)
    mean, proj = fit_map(x[ct], labels[ct], r, standardize=False)
    base = embed(x, mean, proj)
    row("baseline (the bundled recipe's map, no detection column)", base)
    row("centred on the train images' mean", centred(base, train))
    xp = zscore_blocks([np.power(np.maximum(f, 0), args.power) for f in (spam, spamc)], ct)
    mp, pp = fit_map(xp[ct], labels[ct], r, standardize=False)
    powered = embed(xp, mp, pp)
    row(f"power {args.power:g}", powered)
    row(f"power {args.power:g}, centred", centred(powered, train))
    if not args.no_64:
        s64, c64, n64 = features(64)
        x16, x64 = zscore_blocks([spam, spamc], ct, [[s64, c64]])
        e64 = embed(x64, mean, proj, n64)
        row("exemplars on 64 crops, queries on 16", e64, base)
        row("64 / 64 crops (the map fitted on 16)", e64)
    for a in (float(v) for v in args.alpha.split(",") if v.strip()):
        m2, p2 = fit_mixed_scatter(x[ct], labels[ct], owner[ct], a, r)
        row(f"image-level scatter {a:g}", embed(x, m2, p2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
