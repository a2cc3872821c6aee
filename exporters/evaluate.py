"""``lida-train evaluate``: a quick retrieval check on the held-out half (the full harness is ``lida eval``).

Protocol: gallery = ``k`` train-split images per generated class (the first ``k`` in the split's
hash order, the same images :func:`lida_exporters.train.registration_set` adapts on; further
``draws`` pick other random train-split images); queries = every held-out image of those
classes. Image embedding = L2-normalised mean of the serving crops. Scopes: ``named`` (the named
generators) and ``ldm-sr`` (the 7 checkpoints), as :func:`lida_plugin.evaluate.metrics.scope_of`
draws them.

This module only picks galleries and queries; every score is ``lida eval``'s
(:mod:`lida_plugin.evaluate.metrics`): Rank-1 and AP with its pessimistic tie rule, averaged per
class, then over classes ("Avg Rank-1 / mAP" as in the paper), and the ROC AUC.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lida_plugin.evaluate import metrics as M

from . import data as D


def scope_labels(items: list[D.Item], scope: str) -> list[str]:
    """The generated classes of ``items`` in ``scope`` (``named`` or ``ldm-sr``), sorted."""
    return sorted({it.label for it in items if it.kind == "generated" and M.scope_of(it.label) == scope})


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
    q_y = [ci for ci, lab in enumerate(labels) for _ in q[lab]]
    r1s, maps = [], []
    for d in range(draws):
        gal, gal_y = [], []
        for ci, lab in enumerate(labels):
            pool = idx[lab] if d == 0 else list(rng.permutation(idx[lab]))
            take = pool[:shots] if shots else pool
            gal += take
            gal_y += [ci] * len(take)
        g = emb[gal]
        sims = [emb[q[lab]] @ g.T for lab in labels if q[lab]]
        rm = M.retrieval_metrics(np.concatenate(sims) if sims else np.zeros((0, len(gal))), gal_y, q_y)
        r1s.append(rm["rank1_class_avg"])
        maps.append(rm["map_class_avg"])
    return {"rank1": round(100 * float(np.mean(r1s)), 1), "map": round(100 * float(np.mean(maps)), 1)}


def detection_auc(emb: np.ndarray, items: list[D.Item], prototype: np.ndarray, split: str = "heldout") -> float:
    """ROC AUC (%) of ``-sim(x, p_real)`` separating generated from real images of ``split``."""
    sel = [i for i, it in enumerate(items) if it.split == split]
    return round(100 * M.roc_auc(-(emb[sel] @ prototype), np.asarray([items[i].kind == "generated" for i in sel])), 1)


def report(emb: np.ndarray, items: list[D.Item], shots=(1, 5, 10), draws: int = 1, prototype=None) -> dict:
    out: dict = {}
    for scope in ("named", "ldm-sr"):
        labs = scope_labels(items, scope)
        for k in shots:
            out[f"{scope}/{k}-shot"] = retrieval(emb, items, labs, k, draws)
    if prototype is not None:
        out["detection_auc_heldout"] = detection_auc(emb, items, np.asarray(prototype))
    return out
