"""A quick retrieval check on the held-out half (the full harness is issue 4's).

Protocol: gallery = ``k`` train-split images per generated class (the first ``k`` in the split's
hash order, the same images :func:`exporters.train.registration_set` adapts on; further
``draws`` pick other random train-split images); queries = every held-out image of those
classes. Image embedding = L2-normalised mean of the serving crops. Rank-1 = the nearest gallery
image has the query's class; AP over the ranked gallery. Both are averaged per class, then over
classes ("Avg Rank-1 / mAP" as in the paper). Scopes: ``named`` (the 12 named generators),
``ldm-sr`` (the 7 checkpoints), ``all``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from . import data as D

LDM = "ldm-sr"


def scope_labels(items: list[D.Item], scope: str) -> list[str]:
    labs = sorted({it.label for it in items if it.kind == "generated"})
    if scope == "named":
        return [x for x in labs if not x.startswith(LDM)]
    if scope == "ldm-sr":
        return [x for x in labs if x.startswith(LDM)]
    return labs


def _ap(rel: np.ndarray) -> float:
    hits = np.cumsum(rel)
    if hits[-1] == 0:
        return 0.0
    return float((hits / np.arange(1, len(rel) + 1))[rel.astype(bool)].mean())


def retrieval(
    emb: np.ndarray, items: list[D.Item], labels: list[str], shots: int, draws: int = 1, seed: int = 0
) -> dict[str, float]:
    """``{"rank1": %, "map": %}`` averaged over classes and ``draws`` gallery draws."""
    rng = np.random.default_rng(seed)
    idx = {lab: [] for lab in labels}
    q = {lab: [] for lab in labels}
    for i, it in enumerate(items):
        if it.kind == "generated" and it.label in idx:
            (idx if it.split == "train" else q)[it.label].append(i)
    for lab in labels:
        idx[lab].sort(key=lambda i: hashlib.sha256(items[i].relpath.encode()).hexdigest())
    r1s, maps = [], []
    for d in range(draws):
        gal, gal_y = [], []
        for ci, lab in enumerate(labels):
            pool = idx[lab] if d == 0 else list(rng.permutation(idx[lab]))
            take = pool[:shots] if shots else pool
            gal += take
            gal_y += [ci] * len(take)
        g = emb[gal]
        gy = np.asarray(gal_y)
        per_r1, per_ap = [], []
        for ci, lab in enumerate(labels):
            if not q[lab]:
                continue
            s = emb[q[lab]] @ g.T
            order = np.argsort(-s, axis=1, kind="stable")
            rel = gy[order] == ci
            per_r1.append(rel[:, 0].mean())
            per_ap.append(np.mean([_ap(r) for r in rel]))
        r1s.append(np.mean(per_r1))
        maps.append(np.mean(per_ap))
    return {"rank1": round(100 * float(np.mean(r1s)), 1), "map": round(100 * float(np.mean(maps)), 1)}


def detection_auc(emb: np.ndarray, items: list[D.Item], prototype: np.ndarray, split: str = "heldout") -> float:
    """ROC AUC of ``-sim(x, p_real)`` separating generated from real images of ``split``."""
    sel = [i for i, it in enumerate(items) if it.split == split]
    s = -(emb[sel] @ prototype)
    y = np.asarray([items[i].kind == "generated" for i in sel])
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    return round(100 * float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()), 1)


def report(emb: np.ndarray, items: list[D.Item], shots=(1, 5, 10), draws: int = 1, prototype=None) -> dict:
    out: dict = {}
    for scope in ("named", "ldm-sr"):
        labs = scope_labels(items, scope)
        for k in shots:
            out[f"{scope}/{k}-shot"] = retrieval(emb, items, labs, k, draws)
    if prototype is not None:
        out["detection_auc_heldout"] = detection_auc(emb, items, np.asarray(prototype))
    return out
