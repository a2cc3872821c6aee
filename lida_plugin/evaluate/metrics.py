"""Retrieval and detection metrics, as the paper defines them.

Ranking: a query's gallery is sorted by cosine similarity, highest first. **Ties** are broken
deterministically and *pessimistically*: among gallery items with exactly the same similarity,
items of another class come before items of the query's class, then lower gallery index first.
So a degenerate encoder (every similarity equal) scores Rank-1 = 0 and the lowest possible AP,
never a lucky hit; for real-valued embeddings ties are rare and the rule changes nothing.

* **Rank-1** of a query: 1 if the first ranked gallery item has the query's label.
* **AP** of a query: the mean, over the positions ``r`` of its relevant (same-label) gallery
  items in the ranking, of precision@``r``; 0 when the gallery has no relevant item.
* **Averages**: ``*_class_avg`` averages per class first, then over classes (the paper's "Avg
  Rank-1 / Avg mAP", and this project's headline); ``*_micro`` averages over queries.
* **ROC AUC**: the Mann-Whitney statistic, ties counted one half.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .corpus import REAL


def rank_gallery(sims: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Gallery indices best first for one query; ties go against the query (see the module doc)."""
    sims = np.asarray(sims, dtype=np.float64)
    rel = np.asarray(relevant, dtype=bool)
    idx = np.arange(len(sims))
    # np.lexsort: last key is primary -> similarity desc, then irrelevant first, then index
    return np.lexsort((idx, rel.astype(np.int8), -sims))


def average_precision(ranked_relevance: np.ndarray) -> float:
    """AP of one ranked relevance vector (``True`` where the ranked item is relevant)."""
    rel = np.asarray(ranked_relevance, dtype=bool)
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    positions = np.flatnonzero(rel) + 1
    return float(np.mean(hits[rel] / positions))


def ranked_relevance(sims: np.ndarray, gallery_labels: Sequence, query_labels: Sequence) -> np.ndarray:
    """``[Q, G]`` boolean: row ``q`` is query ``q``'s relevance in ranked order."""
    sims = np.atleast_2d(np.asarray(sims, dtype=np.float64))
    gl = np.asarray(gallery_labels)
    out = np.empty(sims.shape, dtype=bool)
    for q, ql in enumerate(query_labels):
        rel = gl == ql
        out[q] = rel[rank_gallery(sims[q], rel)]
    return out


def top1(sims: np.ndarray, gallery_labels: Sequence, query_labels: Sequence) -> np.ndarray:
    """The label of each query's first ranked gallery item (pessimistic ties)."""
    sims = np.atleast_2d(np.asarray(sims, dtype=np.float64))
    gl = np.asarray(gallery_labels)
    out = []
    for q, ql in enumerate(query_labels):
        out.append(gl[rank_gallery(sims[q], gl == ql)[0]])
    return np.asarray(out, dtype=gl.dtype)


def retrieval_metrics(sims: np.ndarray, gallery_labels: Sequence, query_labels: Sequence) -> dict:
    """Rank-1 and mAP (micro and class-averaged) plus per-class values and the top-1 labels.

    ``sims`` is ``[Q, G]`` (query x gallery similarities). Values are fractions in [0, 1].
    """
    ql = np.asarray(query_labels)
    if len(ql) == 0:
        return {"n_queries": 0, "rank1_micro": float("nan"), "map_micro": float("nan"),
                "rank1_class_avg": float("nan"), "map_class_avg": float("nan"),
                "per_class": {}, "top1": []}  # fmt: skip
    rel = ranked_relevance(sims, gallery_labels, ql)
    r1 = rel[:, 0].astype(np.float64)
    ap = np.array([average_precision(r) for r in rel])
    per_class = {}
    for c in sorted(set(ql.tolist())):
        m = ql == c
        per_class[c] = {"rank1": float(r1[m].mean()), "map": float(ap[m].mean()), "n": int(m.sum())}
    return {
        "n_queries": int(len(ql)),
        "rank1_micro": float(r1.mean()),
        "map_micro": float(ap.mean()),
        "rank1_class_avg": float(np.mean([v["rank1"] for v in per_class.values()])),
        "map_class_avg": float(np.mean([v["map"] for v in per_class.values()])),
        "per_class": per_class,
        "top1": top1(sims, gallery_labels, ql).tolist(),
    }


def scope_of(label: str) -> str:
    """The report scope of a class label: ``real``, ``ldm-sr`` (the seven checkpoints) or ``named``."""
    if label == REAL:
        return "real"
    return "ldm-sr" if label.startswith("ldm-sr") else "named"


def scope_average(per_class: dict, scope: str, key: str = "rank1") -> float:
    """Mean of ``per_class[c][key]`` over the classes ``c`` in ``scope`` (nan when there is none)."""
    vals = [v[key] for c, v in per_class.items() if scope_of(c) == scope]
    return float(np.mean(vals)) if vals else float("nan")


def confusion_matrix(true: Sequence, pred: Sequence, labels: Sequence) -> np.ndarray:
    """``[C, C]`` counts: row = true label, column = predicted label (order of ``labels``)."""
    pos = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred, strict=True):
        if t in pos and p in pos:
            cm[pos[t], pos[p]] += 1
    return cm


def family_accuracy(true: Sequence, pred: Sequence, family_of: dict) -> float:
    """Fraction of predictions in the true label's family (an sd-1.4 / sd-1.5 swap is a hit)."""
    true, pred = list(true), list(pred)
    if not true:
        return float("nan")
    hits = [family_of.get(t, t) == family_of.get(p, p) for t, p in zip(true, pred, strict=True)]
    return float(np.mean(hits))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels (Mann-Whitney, ties = 1/2)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # midranks over tied groups
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_metrics(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Accuracy, balanced accuracy, TPR and FPR of ``score >= threshold`` meaning positive."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    pred = s >= threshold
    tpr = float(pred[y].mean()) if y.any() else float("nan")
    fpr = float(pred[~y].mean()) if (~y).any() else float("nan")
    return {
        "threshold": float(threshold),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "balanced_accuracy": float(np.nanmean([tpr, 1.0 - fpr])),
        "tpr": tpr,
        "fpr": fpr,
        "n_pos": int(y.sum()),
        "n_neg": int((~y).sum()),
    }


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (ddof 1; 0 for one value), min, max and count, NaNs ignored."""
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(len(v)),
    }


def cross_calibrated(scores: np.ndarray, is_generated: np.ndarray, fpr: float, confidence: float = 0.0) -> dict:
    """Detection at a threshold calibrated on *other* real images: the real scores are split into
    two folds (alternating, in the given order); each fold's threshold is calibrated on the other
    fold at ``fpr`` (:func:`lida_plugin.detect.calibrate_threshold`, the exporter's rule, with the model's
    ``confidence``) and applied
    to that fold's real images and to every generated image. Returns the pooled false-positive
    rate over both folds, the mean true-positive rate and the two thresholds: an independent
    estimate of what the model's stated FPR gives on unseen real photos."""
    from ..detect import calibrate_threshold

    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_generated, dtype=bool)
    real = scores[~y]
    folds = [real[0::2], real[1::2]]
    if min(len(f) for f in folds) == 0 or not y.any():
        return {"fpr": float("nan"), "tpr": float("nan"), "thresholds": [], "n_real": int(len(real))}
    false_pos, tprs, ts = 0, [], []
    for i, fold in enumerate(folds):
        t = calibrate_threshold(folds[1 - i], fpr, confidence)
        ts.append(t)
        false_pos += int((fold >= t).sum())
        tprs.append(float((scores[y] >= t).mean()))
    return {"fpr": false_pos / len(real), "tpr": float(np.mean(tprs)), "thresholds": ts, "n_real": int(len(real))}
