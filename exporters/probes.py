"""Diagnostic probes behind the "what limits it" findings in ``docs/evaluation.md``.

``python -m lida_exporters.probes ceiling``
    How much generator information an encoder's embedding holds at all: with *every* train-split
    image labelled (far more than any k-shot gallery), (a) nearest class mean and (b) a
    supervised linear classifier (softmax regression) on the frozen embeddings, scored on the
    held-out split, class-averaged like ``lida eval``. If even (b) is far below a target, the
    target cannot be reached by registration or retrieval tricks on this encoder.

``python -m lida_exporters.probes resize-gate``
    Can a cheap reliability gate tell a resized (resampled) image from an original? Two
    detectors are fitted on the train split (originals vs copies resized by a random factor in
    [0.4, 0.95] or [1.1, 2.0] with a random Pillow filter, saved as PNG): a logistic regression
    on the encoder's embedding, and one on a spectral profile of the image's Laplacian residual
    plus low-bit neighbour statistics. Thresholds are set at 95% / 99% of the train originals
    (5% / 1% false alarms there); the table gives the share flagged on held-out originals and on
    held-out copies resized as ``lida eval``'s sweep does (bicubic 0.5x, 0.75x) and cropped off
    the 8-px grid.

``python -m lida_exporters.probes whitening``
    Does a fixed linear transform of the embedding (fitted on the train split, applied to
    gallery and queries before cosine retrieval) improve ``lida eval``'s Rank-1? Centring,
    PCA whitening (covariance of train embeddings, eigenvalues floored at ``eps`` x the largest)
    and within-class whitening (pooled within-class covariance of the train labels), scored on
    the same held-out episodes as ``lida eval`` (5 seeds, class-averaged Rank-1).

``python -m lida_exporters.probes real-set-out``
    Does the detection threshold's false-positive rate hold on photos of a kind the model never saw?
    The residual-statistics recipe (:mod:`lida_exporters.spam_model`, as bundled before 2026-12-02: no
    resized copies) is fitted again with each real set left out (its map, detection column and head;
    the generated images and the other real sets' train halves as usual), its threshold calibrated on the other sets'
    held-out photos as the export does, and every image of the left-out set scored: the share
    flagged AI against the stated 5%. The same fit with every set in gives each set's held-out rate. Then
    the threshold calibrated the way a photo of an unseen kind meets it (cross-fitted: each other set
    scored by a fit without it), measured on the left-out set again (nested: it is in no fit). Every real
    photo's noised versions (``spam_model.CALIBRATION_NOISE``) are scored too, in a column of their own.
    ``--det-resize-copies 1`` gives the bundled recipe; ``--head-noise [--head-l2 L]`` with the noise options
    (``--det-noise-copies 3 --noise-sd 0.25,2 --noise-generated``) the version-2 head, which reads the noise
    floor and is calibrated on the real photos and their noised versions, as the export calibrates it.

``python -m lida_exporters.probes resize-real``
    Real photos downscaled and saved as PNG (what web publishing does) against the detection head: the
    bundled recipe as it is, and with the detection column and head also fitted on one resized copy of
    every train image (:func:`lida_exporters.spam_model.resize_plan`: a factor in [0.4, 0.9], bicubic / bilinear
    / box / hamming; a resized photo
    is still real, a resized generated image still generated). Held-out images are scored as they are
    and resized 0.5x Lanczos (a filter no fit saw) and 0.75x bicubic: AUC, and the share called generated
    at the threshold calibrated as the export does.

``python -m lida_exporters.probes family-out [--det-camera-copies 1 ...]``
    Detection of generator families no fit saw, with the whole recipe (map, detection column, head, the
    recipe's training copies): 5 folds of families, each left out of the fit; its held-out generated images
    against the held-out real photos, AUC and the share caught at the threshold the export would calibrate.

``python -m lida_exporters.probes camera-real``
    Held-out images through camera-like processing (OpenCV's VNG / edge-aware CFA demosaicing, which no fit
    uses, sharpening, noise, gamma, 0.5x Lanczos) against the detection stage fitted without and with one
    camera-processed copy of every train image (:mod:`lida_exporters.camera`).

``python -m lida_exporters.probes cfa-scores``
    The camera gate's demosaicing score (:mod:`lida_plugin.cfa`) on every original and on held-out images
    demosaiced by four algorithms (also sharpened, noised, downscaled), pooled over 16, 8, 4 and 2 crops: what
    its threshold rests on.

``python -m lida_exporters.probes head-robustness``
    Is robustness to processing a matter of the head's form? A linear and a 2-layer head on the image-mean
    features, with and without camera-processed copies, on camera-real's held-out versions.

``python -m lida_exporters.probes jpeg-real`` / ``jpeg-scores``
    Held-out images after a JPEG round trip saved losslessly, against the detection stage fitted without and with
    JPEG round-trip copies; and the JPEG-history gate's score (:mod:`lida_plugin.jpeghist`) on every original and
    on those round trips: what its threshold rests on.

``python -m lida_exporters.probes noise-real [--noise-sd 0.25,1.25] [--noise-generated]``
    Held-out images with light Gaussian noise (per channel or the same on all three) or a dithered 16-to-8-bit
    export, against the detection stage fitted without and with one noised copy of every train real image
    (:func:`lida_exporters.spam_model.noise_plan`); and each version's score under the noise gate
    (:mod:`lida_plugin.noisegate`): the share of images it reaches.

``python -m lida_exporters.probes noise-head [--head-l2 0.01,0.001,0.0003,0.0001]``
    The version-2 detection head (reads the noise floor; 3 noised copies of every train image) at several L2
    strengths against the bundled version-1 head, each threshold calibrated as the export does, on the noise-real
    versions of the held-out images (docs/evaluation.md, "A head that reads the noise floor").

All print a Markdown table. They use torch (logistic regressions), hence live in ``exporters``.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lida_plugin.decode import decode_bytes, decode_file
from lida_plugin.encoder import Encoder
from lida_plugin.evaluate.corpus import load_corpus

from .cli import _sd_range
from .train import DEFAULT_DATA


def _fit_linear(x: np.ndarray, y: np.ndarray, n_out: int, weight_decay: float, steps: int = 3000, seed: int = 0):
    """Full-batch Adam logistic / softmax regression on standardised ``x``; returns a scorer."""
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    lin = torch.nn.Linear(x.shape[1], n_out)
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=weight_decay)
    if n_out == 1:
        yt = torch.tensor(y, dtype=torch.float32)

        def loss_fn(out):
            return torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], yt)
    else:
        yt = torch.tensor(y)
        w = torch.tensor(1.0 / np.bincount(y, minlength=n_out).clip(1), dtype=torch.float32)  # class-balanced

        def loss_fn(out):
            return torch.nn.functional.cross_entropy(out, yt, weight=w)

    for _ in range(steps):
        opt.zero_grad()
        loss_fn(lin(xt)).backward()
        opt.step()

    def score(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return lin(torch.tensor((z - mu) / sd, dtype=torch.float32)).numpy()

    return score


def _embed(enc: Encoder, decs) -> np.ndarray:
    return enc.embed_crop_sets([enc.crops_for(d) for d in decs])


def _corpus_embeddings(entries, model: str | None, threads: int) -> tuple[np.ndarray, str]:
    """Every corpus image through ``model``, the way ``lida eval`` embeds it; and the model id."""
    from lida_plugin.evaluate.embed import OnnxEmbedder, embed_paths

    embedder = OnnxEmbedder(model, threads=threads)
    embs, _, _, _, _ = embed_paths([e.path for e in entries], {"model": embedder})
    return embs["model"], embedder.info.model_id


# -- ceiling ---------------------------------------------------------------------------------------
def ceiling(data: Path, model: str | None, threads: int) -> str:
    from lida_plugin.evaluate.metrics import scope_average

    entries = load_corpus(data)
    emb, model_id = _corpus_embeddings(entries, model, threads)
    labels = sorted({e.label for e in entries})
    li = {lab: i for i, lab in enumerate(labels)}
    y = np.array([li[e.label] for e in entries])
    tr = np.array([e.split == "train" for e in entries])

    def scores(pred: np.ndarray) -> dict[str, float]:
        """Held-out accuracy per class, averaged over all classes and per ``lida eval`` scope (nan for
        a scope with no class, not 0)."""
        pc = {
            lab: {"rank1": float((pred[~tr & (y == i)] == i).mean())} for lab, i in li.items() if (~tr & (y == i)).any()
        }
        out = {s: scope_average(pc, s) for s in ("named", "ldm-sr", "real")}
        return {"all": float(np.mean([v["rank1"] for v in pc.values()])), **out}

    cm = np.stack([emb[tr & (y == i)].mean(0) for i in range(len(labels))])
    cm /= np.linalg.norm(cm, axis=1, keepdims=True)
    rows = [("nearest class mean of all train images", scores((emb @ cm.T).argmax(1)))]
    for wd in (1e-4, 1e-3):
        f = _fit_linear(emb[tr], y[tr], len(labels), wd)
        rows.append((f"linear classifier on all train images (weight decay {wd:g})", scores(f(emb).argmax(1))))
    out = [
        f"Model `{model_id}`; held-out accuracy, class-averaged (%), chance 1/{len(labels)}.",
        "",
        "| probe | all classes | named | ldm-sr | real |",
        "|---|---|---|---|---|",
    ]
    out += [f"| {n} | {100 * s['all']:.1f} | {100 * s['named']:.1f} | {100 * s['ldm-sr']:.1f} | {100 * s['real']:.1f} |"
            for n, s in rows]  # fmt: skip
    return "\n".join(out)


# -- whitening -------------------------------------------------------------------------------------
def whitening(data: Path, model: str | None, threads: int, seeds: int = 5) -> str:
    from lida_plugin.evaluate.corpus import families
    from lida_plugin.evaluate.episodes import make_episode
    from lida_plugin.evaluate.run import episode_scores

    entries = load_corpus(data)
    fam = families(entries)
    emb, model_id = _corpus_embeddings(entries, model, threads)
    emb = emb.astype(np.float64)
    tr = np.array([e.split == "train" for e in entries])
    labs = np.array([e.label for e in entries])
    mu = emb[tr].mean(0)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def whiten(cov: np.ndarray, eps: float) -> np.ndarray:
        w, v = np.linalg.eigh(cov)
        return v @ np.diag(1.0 / np.sqrt(np.maximum(w, 0) + eps * w.max())) @ v.T

    within = sum(np.cov(emb[tr & (labs == lab)].T) * ((tr & (labs == lab)).sum() - 1) for lab in set(labs[tr]))
    within = within / tr.sum()
    variants = {"none (the runtime today)": unit(emb), "centred on the train mean": unit(emb - mu)}
    for eps in (0.1, 0.01, 0.001):
        variants[f"PCA whitening, eps {eps:g}"] = unit((emb - mu) @ whiten(np.cov(emb[tr].T), eps))
    for eps in (0.1, 0.01):
        variants[f"within-class whitening, eps {eps:g}"] = unit((emb - mu) @ whiten(within, eps))
    out = [
        f"Model `{model_id}`; held-out Rank-1 (%), class-averaged, mean of {seeds} seeds (as `lida eval`).",
        "",
        "| transform | 1-shot | 5-shot | 10-shot | 1-shot kNN det. AUC |",
        "|---|---|---|---|---|",
    ]
    for name, e in variants.items():
        cells, auc = [], []
        for k in (1, 5, 10):
            rs = [episode_scores(entries, e, make_episode(entries, k, s), fam) for s in range(seeds)]
            cells.append(f"{100 * np.mean([r['rank1_class_avg'] for r in rs]):.1f}")
            if k == 1:
                auc = [r["knn_detection_auc"] for r in rs]
        out.append(f"| {name} | {' | '.join(cells)} | {np.nanmean(auc):.3f} |")
    return "\n".join(out)


# -- resize gate -----------------------------------------------------------------------------------
_FILTERS = ("BILINEAR", "BICUBIC", "LANCZOS", "BOX")


def _png(px: np.ndarray, name: str):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(px)).save(buf, format="PNG")
    return decode_bytes(buf.getvalue(), name)


def _resized(px: np.ndarray, f: float, flt: str) -> np.ndarray:
    from PIL import Image

    h, w = px.shape[:2]
    size = (max(64, round(w * f)), max(64, round(h * f)))
    return np.asarray(Image.fromarray(px).resize(size, getattr(Image, flt)))


def spectral_features(px: np.ndarray, bands: int = 24) -> np.ndarray:
    """Log energy of the Laplacian residual of the central <= 256^2 luminance in ``bands``
    square-ring frequency bands (mean removed), its log variance, and the mean absolute
    neighbour difference of the low bits along each axis."""
    y = px[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    h, w = y.shape
    s = min(h, w, 256)
    y = y[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    r = y - 0.25 * (np.roll(y, 1, 0) + np.roll(y, -1, 0) + np.roll(y, 1, 1) + np.roll(y, -1, 1))
    p = np.abs(np.fft.fft2(r - r.mean())) ** 2
    ring = np.maximum(np.abs(np.fft.fftfreq(s))[:, None], np.abs(np.fft.fftfreq(s))[None, :])
    b = np.minimum((ring / 0.5 * bands).astype(int), bands - 1).ravel()
    e = np.log(np.bincount(b, p.ravel(), bands) / np.bincount(b, None, bands) + 1e-6)
    low = (px[..., :3] & 7).astype(np.float32)
    lb = [float(np.mean(np.abs(np.diff(low, axis=a)))) for a in (0, 1)]
    return np.concatenate([e - e.mean(), [np.log(r.var() + 1e-6)], lb])


def resize_gate(data: Path, model: str | None, threads: int, seed: int = 0) -> str:
    from tqdm import tqdm

    entries = load_corpus(data)
    enc = Encoder(model, device="cpu", threads=threads)
    rng = np.random.default_rng(seed)
    tr_e, tr_s, tr_y, tr_fam = [], [], [], []  # tr_fam: a generated image's family ("" for real), per row
    orig_e, orig_s, orig_fam = [], [], []  # every generated original (either split), for the left-out column
    tests = ("original", "bicubic 0.5x", "bicubic 0.75x", "crop off-grid")
    te_e: dict[str, list] = {t: [] for t in tests}
    te_s: dict[str, list] = {t: [] for t in tests}
    for e in tqdm(entries, desc="probe", unit="img", mininterval=2.0):
        px = decode_file(e.path).pixels
        if e.split == "train":
            variants = [(px, 0)]
            for _ in range(2):
                f = rng.uniform(0.4, 0.95) if rng.random() < 0.75 else rng.uniform(1.1, 2.0)
                variants.append((_resized(px, f, _FILTERS[rng.integers(len(_FILTERS))]), 1))
            decs = [_png(v, f"{e.relpath}[{i}]") for i, (v, _) in enumerate(variants)]
            tr_e.append(_embed(enc, decs))
            tr_s += [spectral_features(d.pixels) for d in decs]
            tr_y += [lab for _, lab in variants]
            tr_fam += [e.family if e.kind == "generated" else ""] * len(variants)
            if e.kind == "generated":
                orig_e.append(tr_e[-1][0])
                orig_s.append(tr_s[-len(variants)])
                orig_fam.append(e.family)
        else:
            h, w = px.shape[:2]
            vs = [px, _resized(px, 0.5, "BICUBIC"), _resized(px, 0.75, "BICUBIC"),
                  px[5 : 5 + int(h * 0.75), 3 : 3 + int(w * 0.75)]]  # fmt: skip
            decs = [_png(v, f"{e.relpath}[{t}]") for v, t in zip(vs, tests, strict=True)]
            for t, d, z in zip(tests, decs, _embed(enc, decs), strict=True):
                te_e[t].append(z)
                te_s[t].append(spectral_features(d.pixels))
            if e.kind == "generated":
                orig_e.append(te_e["original"][-1])
                orig_s.append(te_s["original"][-1])
                orig_fam.append(e.family)
    y = np.array(tr_y)
    fam = np.array(tr_fam)
    ofam = np.array(orig_fam)
    feats = {
        "encoder embedding": (np.concatenate(tr_e), {t: np.stack(v) for t, v in te_e.items()}, np.stack(orig_e)),
        "spectral + low-bit statistics": (
            np.stack(tr_s), {t: np.stack(v) for t, v in te_s.items()}, np.stack(orig_s)),
    }  # fmt: skip
    out = [
        f"Model `{enc.info.model_id}`; {int((y == 0).sum())} train originals, {int(y.sum())} resized train copies;"
        f" held-out: {len(te_e['original'])} images per column. Share flagged as resized (%).",
        "",
        "| detector | threshold (train originals flagged) | " + " | ".join(f"held-out {t}" for t in tests)
        + " | originals of a left-out family | worst left-out family |",
        "|---|---|" + "---|" * (len(tests) + 2),
    ]  # fmt: skip
    qs = (0.95, 0.99)
    for name, (x, te, orig) in feats.items():
        score = _fit_linear(x, y, 1, 1e-3)
        s0 = score(x[y == 0])[:, 0]
        # a generator family nobody fitted on: the detector refitted without each family in turn (its
        # train originals and their resized copies), threshold on the remaining train originals, then
        # the share of that family's originals (both splits) it flags; pooled over images, and the worst
        left_out = {q: [] for q in qs}
        worst = {q: (0.0, "none") for q in qs}
        for f in sorted(set(ofam)):
            keep = fam != f
            sc = _fit_linear(x[keep], y[keep], 1, 1e-3)
            s_keep = sc(x[keep & (y == 0)])[:, 0]
            so = sc(orig[ofam == f])[:, 0]
            for q in qs:
                hit = so > float(np.quantile(s_keep, q))
                left_out[q] += hit.tolist()
                if len(hit) >= 3 and hit.mean() > worst[q][0]:
                    worst[q] = (float(hit.mean()), f"{f} ({len(hit)})")
        for q in qs:
            t = float(np.quantile(s0, q))
            cells = " | ".join(f"{100 * float((score(te[k])[:, 0] > t).mean()):.1f}" for k in tests)
            w = f"{100 * worst[q][0]:.1f} {worst[q][1]}"
            out.append(f"| {name} | {100 * (1 - q):.0f}% | {cells} | {100 * float(np.mean(left_out[q])):.1f} | {w} |")
    return "\n".join(out)


# -- real-set-out ----------------------------------------------------------------------------------
def _fit_stage(items, feats, counts, train: np.ndarray, r, cache: Path | None = None, floors: np.ndarray | None = None):
    """The spam recipe's map, detection column and head fitted on ``train`` images (and, as the recipe says,
    resized, camera-processed and noised copies of them and random decoders' images made from their real photos:
    :func:`lida_exporters.spam_model.detection_fit_set`): ``(mean, proj with the column, head, item embeddings)``.
    ``floors``: the items' noise floors (:func:`lida_exporters.spam_model.image_noise_floors`), which a version-2
    head (``r.head_noise``) needs."""
    from .spam_model import detection_fit_set, eval_label, fit_detection_stage, fit_map

    owner = np.repeat(np.arange(len(items)), counts)
    ct = train[owner]
    mean, proj = fit_map(feats[ct], [eval_label(items[i]) for i in owner[ct]], r)
    det = detection_fit_set(items, feats, counts, train, r, cache, False, floors)
    proj, emb, head = fit_detection_stage(*det[:4], mean, proj, r, det.noise, det.column_fit(r))
    return mean, proj, head, emb[: len(items)]


def _head_scores(feats: np.ndarray, counts, floors, mean: np.ndarray, proj: np.ndarray, head: dict) -> np.ndarray:
    """``ai_score`` of images given by their crop features (and noise floors, which a version-1 head ignores) under
    a fit's map and head."""
    from lida_plugin.detect import head_score

    from .spam_model import apply_map, image_embeddings

    return np.asarray(head_score(image_embeddings(apply_map(feats, mean, proj), counts), head, floors), np.float64)


@dataclass
class _Copies:
    """Versions of some items scored next to them under every fit (:func:`_fit_detector`): crop features,
    crop counts, noise floors, and the item each was made from."""

    feats: np.ndarray
    counts: list[int]
    floors: np.ndarray
    owner: np.ndarray


def _fit_detector(items, feats, counts, train: np.ndarray, r, cache: Path | None = None,
                  floors: np.ndarray | None = None, copies: _Copies | None = None) -> np.ndarray:  # fmt: skip
    """Every item's ``ai_score`` under :func:`_fit_stage`'s fit, then (given) every one of ``copies``'."""
    from lida_plugin.detect import head_score

    mean, proj, head, emb = _fit_stage(items, feats, counts, train, r, cache, floors)
    score = np.asarray(head_score(emb, head, floors), dtype=np.float64)
    if copies is None:
        return score
    return np.concatenate([score, _head_scores(copies.feats, copies.counts, copies.floors, mean, proj, head)])


def _crossfit_rows(items, feats, counts, train, gen, real_set, outer: dict, r, cache=None, floors=None,
                   copies=None, cal=None, ev=None, noised=None) -> list[tuple]:  # fmt: skip
    """Each real set left out again, the threshold now cross-fitted without it: every *other* set scored by
    a fit that never saw it (nor the left-out one), their pooled scores calibrated at the recipe's rate.
    ``cal``/``ev``/``noised`` widen an item mask to the scores calibrated on / measured / of the noised versions
    (:func:`real_set_out`)."""
    from lida_plugin.detect import calibrate_threshold

    cal = cal or (lambda m: m)
    ev = ev or (lambda m: m)
    sets = sorted(outer)
    rows = []
    for name in sets:
        pooled = []
        for other in sets:
            if other != name:
                seen = train & (real_set != name) & (real_set != other)
                s = _fit_detector(items, feats, counts, seen, r, cache, floors, copies)
                pooled.append(s[cal(real_set == other)])
        t = calibrate_threshold(np.concatenate(pooled), r.fpr, r.fpr_confidence)
        score, out = outer[name], real_set == name
        rows.append(_set_row(name, "left out, threshold cross-fitted", score, out, ~train & gen, t, ev, noised))
    return rows


def _set_row(name: str, where: str, score: np.ndarray, real: np.ndarray, held_gen: np.ndarray, t: float, ev,
             noised=None) -> tuple:  # fmt: skip
    """``(set, in the fit?, photos, flagged AI, flagged AI of its noised versions or None, TPR, threshold)``."""
    m = ev(real)
    flagged_noised = float((score[noised(real)] >= t).mean()) if noised is not None else None
    return (name, where, int(m.sum()), float((score[m] >= t).mean()), flagged_noised,
            float((score[ev(held_gen)] >= t).mean()), t)  # fmt: skip


def _real_noised(items, crops, counts, gen: np.ndarray, r, cache: Path | None):
    """What the detection probes score next to the items: ``(floors, copies, cal, ev, noised)``. ``floors``, the
    items' noise floors for a version-2 head (``r.head_noise``; else None); ``copies``, every real photo's
    ``CALIBRATION_NOISE`` versions (:class:`_Copies`, scored by :func:`_fit_detector` after the items); and three
    functions widening an item mask to those scores: ``cal``, the ones a threshold is calibrated on (the photos,
    and for a version-2 head their noised versions too, as the export calibrates it), ``ev``, the items themselves,
    ``noised``, the noised versions."""
    from . import spam_model as sm

    floors = sm.image_noise_floors(crops, counts) if r.head_noise else None
    plan = sm.calibration_plan(np.flatnonzero(~gen))
    cf, cc, cn = sm.processed_copies(items, plan, r, cache, False, "real-noised")
    copies = _Copies(cf, cc, cn, np.array([i for i, _ in plan]))
    own = np.concatenate([np.arange(len(items)), copies.owner])
    is_copy = np.arange(len(own)) >= len(items)

    def cal(m: np.ndarray) -> np.ndarray:
        return m[own] & (True if r.head_noise else ~is_copy)

    def ev(m: np.ndarray) -> np.ndarray:
        return m[own] & ~is_copy

    def noised(m: np.ndarray) -> np.ndarray:
        return m[own] & is_copy

    return floors, copies, cal, ev, noised


def real_set_out(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
                 recipe=None, crossfit: bool = True) -> str:  # fmt: skip
    """Long because it is one table: the all-sets fit, then one fit per left-out real set. ``recipe``: the
    recipe bundled before the resized copies (``SpamRecipe(det_resize_copies=0)``) unless given; ``model`` is not
    used (the recipe is fitted afresh). Every real photo's ``CALIBRATION_NOISE`` versions are scored too (a column
    of their own); for a version-2 head (``head_noise``) the thresholds are calibrated on the real photos used and
    their noised versions, as the export calibrates it, and the head reads the noise floors."""
    from lida_plugin.detect import calibrate_threshold

    from . import spam_model as sm

    r = recipe or sm.SpamRecipe(**{**sm.VERSION1.__dict__, "det_resize_copies": 0})  # (first measured for the model
    # bundled before the resized copies)
    items = load_corpus(data)
    crops, feats, counts = sm.corpus_features(items, r, cache, progress=False)
    train = np.array([it.split == "train" for it in items])
    gen = np.array([it.kind == "generated" for it in items])
    real_set = np.array([it.source if it.kind == "real" else "" for it in items])
    floors, copies, cal, ev, noised = _real_noised(items, crops, counts, gen, r, cache)
    sets = sorted(set(real_set[~gen]))
    rows = []
    score = _fit_detector(items, feats, counts, train, r, cache, floors, copies)
    t = calibrate_threshold(score[cal(~train & ~gen)], r.fpr, r.fpr_confidence)
    for name in sets:
        m = ~train & (real_set == name)
        rows.append(_set_row(name, "in (held-out half)", score, m, ~train & gen, t, ev, noised))
    outer = {}
    for name in sets:
        out = real_set == name
        score = outer[name] = _fit_detector(items, feats, counts, train & ~out, r, cache, floors, copies)
        t = calibrate_threshold(score[cal(~train & ~gen & ~out)], r.fpr, r.fpr_confidence)
        rows.append(_set_row(name, "left out (all its images)", score, out, ~train & gen, t, ev, noised))
    if crossfit and len(sets) >= 3:  # every inner fit needs a real set left in it
        fits = (floors, copies, cal, ev, noised)
        rows += _crossfit_rows(items, feats, counts, train, gen, real_set, outer, r, cache, *fits)
    head = f"version 2 (reads the noise floor), L2 {r.head_l2:g}" if r.head_noise else f"version 1, L2 {r.head_l2:g}"
    noise = f"{r.det_noise_copies} noised copies (sd {r.noise_sd[0]:g}-{r.noise_sd[1]:g})" if r.det_noise_copies else ""
    lines = [
        f"Recipe of `lida-train spam` (SPAM T={r.T}{' + colour' if r.colour else ''}, {r.det_resize_copies} resized"
        f" copies{', ' + noise if noise else ''}; detection head {head}; threshold at {r.fpr:.0%} FPR with"
        f" {r.fpr_confidence:.0%} confidence on the held-out real photos used"
        f"{' and their noised versions' if r.head_noise else ''}); share of a real set's photos flagged AI-generated,"
        f" of their {len(sm.CALIBRATION_NOISE)} noised versions each (CALIBRATION_NOISE), and the held-out generated"
        " images caught at the same threshold.",
        "",
        "| real set | in the fit? | photos | flagged AI | noised versions flagged | TPR (held-out generated)"
        " | threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, w, k, f, fn, tp, th in rows:
        cell = "" if fn is None else f"{100 * fn:.1f}%"
        lines.append(f"| {n} | {w} | {k} | {100 * f:.1f}% | {cell} | {100 * tp:.1f}% | {th:.3f} |")
    pooled = [row for row in rows if row[1] == "left out (all its images)"]
    k = sum(row[2] for row in pooled)
    flagged = 100 * sum(row[3] * row[2] for row in pooled) / k
    flagged_noised = 100 * sum(row[4] * row[2] for row in pooled) / k
    caught = 100 * np.mean([row[5] for row in pooled])
    lines += ["", f"Left out, pooled: {flagged:.1f}% of {k} photos flagged, {flagged_noised:.1f}% of their noised"
              f" versions; held-out generated caught {caught:.1f}% (mean over the fits)."]  # fmt: skip
    return "\n".join(lines)


# -- family-out --------------------------------------------------------------------------------------
def family_folds(items) -> list[list[str]]:
    """The generator families in 5 folds (sorted, every 5th), as :mod:`lida_exporters.feature_probe` splits them;
    empty folds (fewer than 5 families) are left out."""
    fams = sorted({it.family for it in items if it.kind == "generated"})
    return [f for f in (fams[i::5] for i in range(5)) if f]


def family_out(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
               recipe=None) -> str:  # fmt: skip
    """Long because it is one table. Detection of generator families the fit never saw, with the whole recipe:
    map, detection column and head fitted without a fold's families (their images, and their resized copies),
    the threshold calibrated on the held-out real photos as the export does; each fold's held-out generated
    images scored against the held-out real photos. ``model`` is not used (the recipe is fitted afresh)."""
    from lida_plugin.detect import calibrate_threshold
    from lida_plugin.evaluate.metrics import roc_auc

    from .spam_model import VERSION1, corpus_features

    r = recipe or VERSION1
    items = load_corpus(data)
    crops, feats, counts = corpus_features(items, r, cache, progress=False)
    train = np.array([it.split == "train" for it in items])
    gen = np.array([it.kind == "generated" for it in items])
    real_ho = ~train & ~gen
    floors, copies, cal, *_ = _real_noised(items, crops, counts, gen, r, cache) if r.head_noise else [None] * 5
    rows, aucs, hits = [], [], []
    for fold in family_folds(items):
        infold = gen & np.array([it.family in fold for it in items])
        score = _fit_detector(items, feats, counts, train & ~infold, r, cache, floors, copies)
        t = calibrate_threshold(score[cal(real_ho) if cal else real_ho], r.fpr, r.fpr_confidence)
        score = score[: len(items)]  # the items' own scores (the noised versions follow them)
        q = ~train & infold
        aucs.append(roc_auc(np.concatenate([score[q], score[real_ho]]), np.arange(q.sum() + real_ho.sum()) < q.sum()))
        hits += (score[q] >= t).tolist()
        names = ", ".join(fold) if len(fold) <= 3 else f"{', '.join(fold[:3])} +{len(fold) - 3}"
        caught = 100 * float((score[q] >= t).mean())
        rows.append(f"| {names} | {int(q.sum())} | {aucs[-1]:.4f} | {caught:.1f}% | {t:.3f} |")
    lines = [
        f"Recipe: det_resize_copies {r.det_resize_copies}, det_rzoo {r.det_rzoo}, det_noise_copies"
        f" {r.det_noise_copies}, det_column {r.det_column}, detection head version {2 if r.head_noise else 1}"
        f" (L2 {r.head_l2:g}); held-out generated images of the left-out families against the"
        f" {int(real_ho.sum())} held-out real photos; threshold calibrated on those photos"
        f"{' and their noised versions' if r.head_noise else ''} as the export does.",
        "",
        "| families left out | generated | AUC | caught at the threshold | threshold |",
        "|---|---|---|---|---|",
        *rows,
        f"| **mean of folds / all** | {len(hits)} | {np.mean(aucs):.4f} | {100 * np.mean(hits):.1f}% | |",
    ]
    return "\n".join(lines)


# -- resize-real -------------------------------------------------------------------------------------
EVAL_RESIZES = (("0.5x lanczos", 0.5, "lanczos"), ("0.75x bicubic", 0.75, "bicubic"))


def resize_real(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
                recipe=None, copies: int = 1) -> str:  # fmt: skip
    """Long because it is one table: the copies' features, then the fit without and with them."""
    from lida_plugin.detect import calibrate_threshold, head_score
    from lida_plugin.evaluate.metrics import roc_auc

    from .spam_model import (
        RESIZE_FILTERS,
        VERSION1,
        apply_map,
        corpus_features,
        eval_label,
        fit_detection_stage,
        fit_map,
        resize_plan,
        resized_copy_features,
    )
    from .spam_model import image_embeddings as img_emb

    r = recipe or VERSION1
    items = load_corpus(data)
    _, feats, counts = corpus_features(items, r, cache, progress=False)
    n = len(items)
    train = np.array([it.split == "train" for it in items])
    gen = np.array([it.kind == "generated" for it in items])
    aug_plan = resize_plan(np.flatnonzero(train), copies)  # the recipe's (det_resize_copies) plan
    held = np.flatnonzero(~train)
    aug_f, aug_c = resized_copy_features(items, aug_plan, r, cache, progress=False)
    ev = {}
    for name, f, flt in EVAL_RESIZES:  # Lanczos: a filter no fit saw
        assert flt == "lanczos" or flt in RESIZE_FILTERS
        ev[name] = resized_copy_features(items, [(int(i), f, flt) for i in held], r, cache, progress=False)
    owner = np.repeat(np.arange(n), counts)
    mean, proj = fit_map(feats[train[owner]], [eval_label(items[i]) for i in owner[train[owner]]], r)
    all_f, all_c = np.concatenate([feats, aug_f]), list(counts) + aug_c
    all_gen = np.concatenate([gen, gen[[i for i, _, _ in aug_plan]]])
    copy_no = np.repeat(np.arange(copies), int(train.sum()))
    rows = []
    fits = [("originals only (the recipe before 2026-12-02)", 0)] + [(f"+ {k} resized copies of every train image", k)
                                                    for k in sorted({1, copies})]  # fmt: skip
    for label, k in fits:
        fit = np.concatenate([train, copy_no < k])
        pj, emb, head = fit_detection_stage(all_f, all_c, all_gen, fit, mean, proj, r)
        score = np.asarray(head_score(emb[:n], head), dtype=np.float64)
        t = calibrate_threshold(score[~train & ~gen], r.fpr, r.fpr_confidence)
        y = gen[held]
        cells = [("original", score[held])]
        for k, (f, c) in ev.items():
            cells.append((k, np.asarray(head_score(img_emb(apply_map(f, mean, pj), c), head), dtype=np.float64)))
        for name, sc in cells:
            rows.append((label, name, roc_auc(sc, y), float((sc[~y] >= t).mean()), float((sc[y] >= t).mean()), t))
    lines = ["Held-out images, ldm-sr too; threshold calibrated on the held-out real originals as the export does.",
             "", "| detection column and head fitted on | held-out images | AUC | real called generated |"
             " generated called generated | threshold |", "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {a} | {b} | {auc:.4f} | {100 * fp:.1f}% | {100 * tp:.1f}% | {t:.3f} |" for a, b, auc, fp, tp, t in rows
    ]
    return "\n".join(lines)


# -- camera-real ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Op:
    """A named processing of a held-out image (``describe`` keys the feature cache)."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]

    def apply(self, px: np.ndarray) -> np.ndarray:
        return self.fn(np.ascontiguousarray(px[..., :3]))

    def describe(self) -> str:
        return self.name


def _cv2_demosaic(px: np.ndarray, code: str) -> np.ndarray:
    import cv2

    from .camera import cfa_masks

    r, g, b = cfa_masks(*px.shape[:2], 0)  # red at (0, 0): OpenCV's "BG" pattern
    cfa = (px[..., 0] * r + px[..., 1] * g + px[..., 2] * b).astype(np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(cfa, getattr(cv2, code)))


def camera_eval_ops() -> list[_Op]:
    """What the camera probe scores: the four demosaicing algorithms (OpenCV's VNG and edge-aware ones are in no
    fit by default), the latter sharpened, noise, an unsharp mask, a gamma curve (no fit saw one), 0.5x Lanczos."""
    from lida_plugin.lossy import resized

    from .camera import demosaic, noisy, unsharp

    return [
        _Op("original", lambda p: p),
        _Op("demosaic bilinear", lambda p: demosaic(p, "bilinear", 0)),
        _Op("demosaic MHC", lambda p: demosaic(p, "mhc", 0)),
        _Op("demosaic VNG (OpenCV)", lambda p: _cv2_demosaic(p, "COLOR_BayerBG2RGB_VNG")),
        _Op("demosaic EA (OpenCV)", lambda p: _cv2_demosaic(p, "COLOR_BayerBG2RGB_EA")),
        _Op("demosaic EA + unsharp 0.8", lambda p: unsharp(_cv2_demosaic(p, "COLOR_BayerBG2RGB_EA"), 0.8, 1.0)),
        _Op("noise sd 2", lambda p: noisy(p, 2.0, 12345)),
        _Op("unsharp 0.8", lambda p: unsharp(p, 0.8, 1.0)),
        _Op("gamma 0.8", lambda p: np.clip(np.rint(255 * (p / 255.0) ** 0.8), 0, 255).astype(np.uint8)),
        _Op("0.5x lanczos", lambda p: resized(p, 0.5, "lanczos", min_side=64)),
    ]


def _copies_rows(data: Path, r, cache: Path | None, field: str, label: str, ops: list[_Op],
                 scores: dict | None = None) -> list[tuple]:  # fmt: skip
    """The detection stage fitted with 0 and ``r.<field>`` (or 1) training copies of a kind, each held-out version of
    ``ops`` scored at the threshold calibrated as the export does (on the held-out real originals, and for a
    version-2 head, ``r.head_noise``, their ``CALIBRATION_NOISE`` versions too): rows of ``(fit, version, AUC, real
    flagged, generated caught, threshold)``. ``scores``, when given, receives each ``(copies, version)``'s held-out
    scores (in corpus order) and ``"generated"``, the held-out labels."""
    import dataclasses

    from lida_plugin.detect import calibrate_threshold, head_score
    from lida_plugin.evaluate.metrics import roc_auc

    from . import spam_model as sm

    items = load_corpus(data)
    crops, feats, counts = sm.corpus_features(items, r, cache, progress=False)
    train = np.array([it.split == "train" for it in items])
    gen = np.array([it.kind == "generated" for it in items])
    held, real_ho = np.flatnonzero(~train), ~train & ~gen
    floors = sm.image_noise_floors(crops, counts) if r.head_noise else None
    ev = {op.name: sm.processed_copies(items, [(int(i), op) for i in held], r, cache, False, "eval") for op in ops}
    plan = sm.calibration_plan(np.flatnonzero(real_ho))
    cal = [sm.processed_copies(items, plan, r, cache, False, "calibration")] if r.head_noise else []
    y = gen[held]
    rows = []
    for k in sorted({0, getattr(r, field) or 1}):
        mean, proj, head, emb = _fit_stage(items, feats, counts, train, dataclasses.replace(r, **{field: k}), cache,
                                           floors)  # fmt: skip
        base = np.asarray(head_score(emb[real_ho], head, None if floors is None else floors[real_ho]), np.float64)
        cal_scores = [_head_scores(*c, mean, proj, head) for c in cal]
        t = calibrate_threshold(np.concatenate([base, *cal_scores]), r.fpr, r.fpr_confidence)
        for name, (f, c, n) in ev.items():
            sc = _head_scores(f, c, n, mean, proj, head)
            if scores is not None:
                scores[(k, name)], scores["generated"] = sc, y
            rows.append((f"{k} {label}", name, roc_auc(sc, y), (sc[~y] >= t).mean(), (sc[y] >= t).mean(), t))
    return rows


def _copies_table(rows: list[tuple], caption: str) -> str:
    lines = [caption, "", "| detection fit | held-out images | AUC | real called generated | generated called generated"
             " | threshold |", "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {a} | {b} | {auc:.4f} | {100 * fp:.1f}% | {100 * tp:.1f}% | {t:.3f} |" for a, b, auc, fp, tp, t in rows
    ]
    return "\n".join(lines)


def camera_real(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
                recipe=None) -> str:  # fmt: skip
    """Held-out images through camera-like processing, against the detection stage fitted without and with
    camera-processed training copies (:mod:`lida_exporters.camera`); threshold calibrated on the held-out real
    originals as the export does. ``model`` is not used (the recipe is fitted afresh)."""
    from .spam_model import VERSION1

    r = recipe or VERSION1
    rows = _copies_rows(data, r, cache, "det_camera_copies", "camera copies", camera_eval_ops())
    noise = "on" if r.camera_noise else "off"
    head = f"Recipe as bundled (det_resize_copies {r.det_resize_copies}) with 0 or 1 camera-processed copies of"
    return _copies_table(rows, f"{head} every train image (demosaicing {', '.join(r.camera_methods)}; noise {noise});"
                         " held-out images, ldm-sr too.")  # fmt: skip


# -- jpeg-scores -------------------------------------------------------------------------------------
def jpeg_scores(data: Path, model: str | None, threads: int) -> str:
    """The JPEG-history gate's score (:mod:`lida_plugin.jpeghist`) on every original of the corpus with the full
    16 crops, per real set, and on the held-out images after a JPEG round trip: median, maximum and the share at or
    above the threshold. ``model`` is not used."""
    from lida_plugin import jpeghist
    from lida_plugin.fingerprint import extract_crops

    from .spam_model import JpegRoundTrip

    trips = [(f"JPEG q{q} {'4:4:4' if sub == 0 else '4:2:0'}", JpegRoundTrip(q, sub))
             for q, sub in ((75, 2), (90, 2), (90, 0), (95, 2), (98, 2))]  # fmt: skip
    got: dict[tuple[str, str], list[float]] = {}
    for e in load_corpus(data):
        px = decode_file(e.path).pixels
        versions = [("original", px)] + ([(n, t.apply(px)) for n, t in trips] if e.split != "train" else [])
        for name, img in versions:
            c = extract_crops(img, 64, 16, 8)
            if len(c) == jpeghist.CROPS:
                who = e.source if e.kind == "real" and name == "original" else e.kind
                got.setdefault((name, who), []).append(jpeghist.jpeg_history_score(c))
    t = jpeghist.JPEG_HISTORY_THRESHOLD
    lines = [f"| version | images of | scores | median | max | at or above {t} |", "|---|---|---|---|---|---|"]
    for (name, who), v in got.items():
        a = np.asarray(v)
        lines.append(
            f"| {name} | {who} | {len(a)} | {np.median(a):.3f} | {a.max():.3f} | {100 * (a >= t).mean():.1f}% |"
        )
    return "\n".join(lines)


# -- head-robustness ---------------------------------------------------------------------------------
def _image_means(f: np.ndarray, counts) -> np.ndarray:
    b = np.cumsum([0, *counts])
    return np.stack([f[b[i] : b[i + 1]].mean(0) for i in range(len(counts))])


def _fit_head_net(x: np.ndarray, y: np.ndarray, kind: str, seed: int = 0, steps: int = 1500):
    """A linear or a 2-layer (256 GELU, dropout) detection head on z-scored features, classes weighted equally;
    returns a scoring function (probability generated)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.tensor((x - mu) / sd, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    torch.manual_seed(seed)
    d = xt.shape[1]
    nn = torch.nn
    mlp = [nn.Dropout(0.2), nn.Linear(d, 256), nn.GELU(), nn.Dropout(0.3), nn.Linear(256, 1)]
    net = nn.Linear(d, 1) if kind == "linear" else nn.Sequential(*mlp)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2 if kind == "linear" else 5e-2)
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - y.mean()) / y.mean(), dtype=torch.float32))
    for _ in range(steps):
        net.train()
        opt.zero_grad()
        lossf(net(xt)[:, 0], yt).backward()
        opt.step()
    net.eval()

    def score(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(net(torch.tensor((z - mu) / sd, dtype=torch.float32))[:, 0]).numpy()

    return score


def head_robustness(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache")) -> str:
    """Is the robustness to processing a matter of the head? A linear and a nonlinear head on the image-mean
    SPAM features (the detection column's input), fitted on the train originals and their resized copies, with
    and without camera-processed copies, scored on camera-real's held-out versions at the threshold calibrated
    on the held-out real originals. ``model`` is not used."""
    from lida_plugin.detect import calibrate_threshold
    from lida_plugin.evaluate.metrics import roc_auc

    from .camera import camera_plan
    from .spam_model import VERSION1, corpus_features, processed_copy_features, resize_plan, resized_copy_features

    r = VERSION1
    items = load_corpus(data)
    _, feats, counts = corpus_features(items, r, cache, progress=False)
    x = _image_means(feats, counts)
    train = np.array([it.split == "train" for it in items])
    gen = np.array([it.kind == "generated" for it in items])
    tr, held = np.flatnonzero(train), np.flatnonzero(~train)
    rplan, cplan = resize_plan(tr, 1), camera_plan(tr, 1)
    xr = _image_means(*resized_copy_features(items, rplan, r, cache, False))
    xc = _image_means(*processed_copy_features(items, cplan, r, cache, False, tag="camera"))
    ev = {op.name: _image_means(*processed_copy_features(items, [(int(i), op) for i in held], r, cache, False, "eval"))
          for op in camera_eval_ops()}  # fmt: skip
    y = gen[held]
    lines = ["| head | fitted on | held-out version | AUC | real called generated | generated called generated |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for kind in ("linear", "mlp"):
        for camera in (False, True):
            xs = [x[train], xr] + ([xc] if camera else [])
            ys = [gen[train], gen[[i for i, _, _ in rplan]]] + ([gen[[i for i, _ in cplan]]] if camera else [])
            score = _fit_head_net(np.concatenate(xs), np.concatenate(ys).astype(np.float32), kind)
            t = calibrate_threshold(score(x[~train & ~gen]), r.fpr, r.fpr_confidence)
            fitted = "originals + resized" + (" + camera copies" if camera else "")
            for name, z in ev.items():
                sc = score(z)
                fp, tp = 100 * (sc[~y] >= t).mean(), 100 * (sc[y] >= t).mean()
                lines.append(f"| {kind} | {fitted} | {name} | {roc_auc(sc, y):.3f} | {fp:.1f}% | {tp:.1f}% |")
    return "\n".join(lines)


# -- jpeg-real ---------------------------------------------------------------------------------------
def jpeg_eval_ops() -> list[_Op]:
    """Held-out versions for the JPEG-history probe: round trips through JPEG saved back losslessly."""
    from lida_plugin.lossy import resized

    from .spam_model import JpegRoundTrip

    ops = [_Op("original", lambda p: p)]
    for q in (75, 90, 95, 98):
        ops.append(_Op(f"JPEG q{q} 4:2:0, then PNG", JpegRoundTrip(q, 2).apply))
    ops.append(_Op("JPEG q90 4:4:4, then PNG", JpegRoundTrip(90, 0).apply))
    ops.append(_Op("0.5x lanczos", lambda p: resized(p, 0.5, "lanczos", min_side=64)))
    return ops


def jpeg_real(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
              recipe=None) -> str:  # fmt: skip
    """Held-out images that went through a JPEG and came back as lossless pixels (a PNG made from a JPEG), against
    the detection stage fitted without and with JPEG round-trip copies of every train image
    (:func:`lida_exporters.spam_model.jpeg_plan`); threshold calibrated on the held-out real originals as the
    export does. ``model`` is not used."""
    from .spam_model import VERSION1

    r = recipe or VERSION1
    rows = _copies_rows(data, r, cache, "det_jpeg_copies", "JPEG copies", jpeg_eval_ops())
    head = f"Recipe as bundled (det_resize_copies {r.det_resize_copies}) with 0 or 1 JPEG round trips of"
    return _copies_table(rows, f"{head} every train image; held-out images, ldm-sr too.")


# -- sharpen-real ------------------------------------------------------------------------------------
def sharpen_eval_ops() -> list[_Op]:
    """Held-out versions for the sharpening probe: unsharp masks inside and outside the training copies' range
    (:func:`lida_exporters.spam_model.sharpen_plan`: amount 0.3-1.5, sigma 0.6-2), and the light-noise and
    downscaling versions the bundled recipe was chosen on, to see what the copies cost there."""
    from lida_plugin.lossy import resized

    from .spam_model import Noise, Sharpen

    ops = [_Op("original", lambda p: p)]
    for amount, sigma in ((0.5, 1.0), (0.8, 1.0), (1.5, 1.0), (2.5, 1.0), (1.0, 3.0)):
        ops.append(_Op(f"unsharp {amount:g} sigma {sigma:g}", Sharpen(amount, sigma).apply))
    ops.append(_Op("noise sd 0.75", Noise(0.75, False, 12345).apply))
    ops.append(_Op("noise sd 1.5", Noise(1.5, False, 12345).apply))
    ops.append(_Op("0.5x lanczos", lambda p: resized(p, 0.5, "lanczos", min_side=64)))
    return ops


def sharpen_real(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
                 recipe=None) -> str:  # fmt: skip
    """Held-out images sharpened (an unsharp mask), against the detection stage fitted without and with sharpened
    copies of every train image (``det_sharpen_copies``); ``recipe``: the bundled one (``SpamRecipe()``) unless
    given; thresholds calibrated as the export does. ``model`` is not used."""
    from .spam_model import SpamRecipe

    r = recipe or SpamRecipe()
    rows = _copies_rows(data, r, cache, "det_sharpen_copies", "sharpened copies", sharpen_eval_ops())
    head = f"version {2 if r.head_noise else 1}"
    of = "generated train image" if r.sharpen_generated_only else "train image"
    return _copies_table(rows, f"Recipe as bundled (detection head {head}) with 0 or {r.det_sharpen_copies or 1}"
                         f" sharpened copies of every {of}; held-out images, ldm-sr too.")  # fmt: skip


# -- noise-real --------------------------------------------------------------------------------------
def noise_eval_ops() -> list[_Op]:
    """What the noise probe scores: originals, Gaussian noise per channel at sd 0.5-3 and the same on all three
    channels, and a dithered export (a 16-bit rendering, e.g. a raw converter's, rounded to 8 bits with triangular
    dither of +-1 grey level)."""
    from .spam_model import Noise

    def dither(p: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(777)
        t = rng.random(p.shape) - rng.random(p.shape)  # triangular on [-1, 1]
        return np.clip(np.rint(p + t), 0, 255).astype(np.uint8)

    ops = [_Op("original", lambda p: p)]
    ops += [_Op(f"noise sd {sd:g}", Noise(sd, False, 12345).apply) for sd in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)]
    ops += [_Op(f"mono noise sd {sd:g}", Noise(sd, True, 12345).apply) for sd in (1.0, 2.0)]
    return ops + [_Op("dithered export", dither)]


def noise_real(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
               recipe=None) -> str:  # fmt: skip
    """Held-out images with light noise, against the detection stage fitted without and with noised copies of the
    train real images (:func:`lida_exporters.spam_model.noise_plan`); threshold calibrated on the held-out real
    originals as the export does; then the noise gate's reach on the same versions. ``model`` is not used."""
    from lida_plugin import noisegate
    from lida_plugin.fingerprint import extract_crops

    from .spam_model import VERSION1

    r = recipe or VERSION1
    ops = noise_eval_ops()
    scores: dict = {}
    rows = _copies_rows(data, r, cache, "det_noise_copies", "noise copies", ops, scores)
    who = "train images" if r.noise_generated else "train real images"
    k = r.det_noise_copies or 1
    head = (
        f"Recipe as bundled (det_resize_copies {r.det_resize_copies}) with 0 or {k} noised"
        f" copies (sd {r.noise_sd[0]:g}-{r.noise_sd[1]:g}) of every one of the {who}; held-out images, ldm-sr too."
    )
    out = [_copies_table(rows, head), "", f"The noise gate (score >= {noisegate.NOISE_THRESHOLD}): share of held-out"
           " images it reaches, and the score's median / maximum.", "",
           "| held-out images | real: reached | real: median / max | generated: reached | generated: median / max |",
           "|---|---|---|---|---|"]  # fmt: skip
    noise = {op.name: [] for op in ops}  # each version's gate score per held-out image, in corpus order
    for e in load_corpus(data):
        if e.split != "train":
            px = decode_file(e.path).pixels
            for op in ops:
                c = extract_crops(op.apply(px), noisegate.CROP, noisegate.CROPS, noisegate.ALIGN)
                noise[op.name].append(noisegate.noise_score(c))
    y = scores["generated"]
    for op in ops:
        cells = []
        for g in (False, True):
            v = np.asarray(noise[op.name])[y == g]
            cells += [f"{(v >= noisegate.NOISE_THRESHOLD).mean():.1%}", f"{np.median(v):.2f} / {v.max():.2f}"]
        out.append(f"| {op.name} | " + " | ".join(cells) + " |")
    out += ["", _banded_table({n: scores[(k, n)] for n in noise}, {n: np.asarray(v) for n, v in noise.items()}, y, r)]
    return "\n".join(out)


BANDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)  # noise-score band edges of the banded threshold (noise_real)


def _banded_table(scores: dict, noise: dict, y: np.ndarray, r) -> str:
    """The detection threshold calibrated per band of the noise gate's score instead of once: the real photos' scores
    move with their noise, a generator's less. Cross-calibrated: the held-out real images in two halves (by image,
    every version of an image on its side), each half's rates read at the bands' thresholds calibrated on the other
    half's versions pooled (the recipe's fpr and confidence; a band with fewer than 20 real versions takes the
    threshold of all of them); FPR pooled, TPR over all generated versions, averaged over the two."""
    from lida_plugin.detect import calibrate_threshold

    real = np.flatnonzero(~y)
    half = np.zeros(len(y), int)
    half[real[1::2]] = 1
    edges = np.array(BANDS)

    def thresholds(side: int) -> tuple[np.ndarray, float]:
        m = ~y & (half == side)
        s = np.concatenate([scores[n][m] for n in scores])
        b = np.searchsorted(edges, np.concatenate([noise[n][m] for n in scores]), side="right")
        whole = calibrate_threshold(s, r.fpr, r.fpr_confidence)
        return np.array([calibrate_threshold(s[b == i], r.fpr, r.fpr_confidence) if (b == i).sum() >= 20
                         else whole for i in range(len(edges) + 1)]), whole  # fmt: skip

    cal = [thresholds(1), thresholds(0)]  # cal[side]: fitted on the other side
    lines = ["Banded threshold (cross-calibrated on the held-out real images' versions; bands of the noise gate's"
             f" score at {', '.join(map(str, BANDS))}), the noised-copies fit above, against its one threshold"
             " calibrated on the originals:", "", "| held-out images | real called generated | generated caught |",
             "|---|---|---|"]  # fmt: skip
    for n in scores:
        b = np.searchsorted(edges, noise[n], side="right")
        fp = np.concatenate([scores[n][~y & (half == h)] >= cal[h][0][b[~y & (half == h)]] for h in (0, 1)])
        tp = np.mean([(scores[n][y] >= cal[h][0][b[y]]).mean() for h in (0, 1)])
        lines.append(f"| {n} | {fp.mean():.1%} | {tp:.1%} |")
    return "\n".join(lines)


# -- noise-head --------------------------------------------------------------------------------------
NOISE_HEAD_VERSIONS = ("original", "noise sd 0.5", "noise sd 1", "noise sd 1.5", "noise sd 2", "mono noise sd 2",
                       "dithered export")  # fmt: skip


def noise_head(data: Path, model: str | None, threads: int, cache: Path | None = Path("runs/cache"),
               recipe=None, l2s: Sequence[float] = (1e-2, 1e-3, 3e-4, 1e-4)) -> str:  # fmt: skip
    """The version-2 detection head (reads the noise floor; ``recipe``: ``SpamRecipe()`` with 3 noised copies of
    every train image, sd 0.25-2, and ``head_noise`` unless given) at each L2 of ``l2s``, against the bundled
    recipe's version-1 head; each threshold calibrated as the export calibrates it (version 1: the held-out real
    originals; version 2: those and their ``CALIBRATION_NOISE`` versions); held-out images, ldm-sr too, as
    :func:`noise_eval_ops` makes them. ``model`` is not used (the recipes are fitted afresh)."""
    from lida_plugin.detect import calibrate_threshold

    from . import spam_model as sm

    v2 = recipe or sm.SpamRecipe(det_noise_copies=3, noise_sd=(0.25, 2.0), noise_generated=True, head_noise=True)
    if not v2.head_noise:
        raise ValueError("noise-head compares version-2 heads: the recipe needs head_noise")
    items = load_corpus(data)
    crops, feats, counts = sm.corpus_features(items, v2, cache, progress=False)
    train = np.array([it.split == "train" for it in items])
    gen = np.array([it.kind == "generated" for it in items])
    held, real_ho = np.flatnonzero(~train), ~train & ~gen
    owner = np.repeat(np.arange(len(items)), counts)
    mean, proj = sm.fit_map(feats[train[owner]], [sm.eval_label(items[i]) for i in owner[train[owner]]], v2)
    floors = sm.image_noise_floors(crops, counts)
    ops = {op.name: op for op in noise_eval_ops()}
    ev = {}
    for name in NOISE_HEAD_VERSIONS:
        plan = [(int(i), ops[name]) for i in held]
        ev[name] = sm.processed_copies(items, plan, v2, cache, False, "eval")
    cal_plan = sm.calibration_plan(np.flatnonzero(real_ho))
    cal_f, cal_c, cal_n = sm.processed_copies(items, cal_plan, v2, cache, False, "calibration")
    yh = gen[held]
    named = yh & np.array([not items[i].label.startswith("ldm-sr") for i in held])

    def row(label: str, r, pj, head) -> str:
        def score(f, c, n):
            return _head_scores(f, c, n, mean, pj, head)

        cal = [score(feats, counts, floors)[real_ho]] + ([score(cal_f, cal_c, cal_n)] if r.head_noise else [])
        t = calibrate_threshold(np.concatenate(cal), r.fpr, r.fpr_confidence)
        sc = {k: score(*v) >= t for k, v in ev.items()}
        cells = [f"{100 * sc[k][~yh].mean():.1f} / {100 * sc[k][yh].mean():.1f}" for k in NOISE_HEAD_VERSIONS]
        return f"| {label} | {t:.3f} | {' | '.join(cells)} | {100 * sc['original'][named].mean():.1f} |"

    v1 = sm.VERSION1
    det = sm.detection_fit_set(items, feats, counts, train, v1, cache, progress=False)
    pj, _, head = sm.fit_detection_stage(*det[:4], mean, proj, v1)
    out = [
        "Real photos called generated / generated images caught (%), held-out images, ldm-sr too; the last column:"
        " the named (not ldm-sr) generators' clean images caught.",
        "",
        f"| detection head | threshold | {' | '.join(NOISE_HEAD_VERSIONS)} | named, original |",
        "|---" * (len(NOISE_HEAD_VERSIONS) + 3) + "|",
        row(f"version 1, the bundled recipe (L2 {v1.head_l2:g})", v1, pj, head),
    ]
    det = sm.detection_fit_set(items, feats, counts, train, v2, cache, False, floors)
    for l2 in l2s:
        r = sm.SpamRecipe(**{**v2.__dict__, "head_l2": l2})
        pj, _, head = sm.fit_detection_stage(*det[:4], mean, proj, r, det.noise, det.column_fit(r))
        out.append(row(f"version 2, {v2.det_noise_copies} noised copies (sd {v2.noise_sd[0]:g}-{v2.noise_sd[1]:g}),"
                       f" L2 {l2:g}", r, pj, head))  # fmt: skip
    return "\n".join(out)


# -- cfa-scores --------------------------------------------------------------------------------------
def cfa_versions() -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
    """The versions :func:`cfa_scores` reads: originals, and held-out images demosaiced (CFA phase per image)."""
    from lida_plugin.lossy import resized

    from .camera import demosaic, noisy, unsharp

    out: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"original": lambda p, ph: p}
    for m in ("bilinear", "mhc", "vng", "ea"):
        out[f"demosaic {m}"] = lambda p, ph, m=m: demosaic(p, m, ph)
    out["demosaic mhc + unsharp 0.8"] = lambda p, ph: unsharp(demosaic(p, "mhc", ph), 0.8, 1.0)
    out["demosaic vng + noise 1.5"] = lambda p, ph: noisy(demosaic(p, "vng", ph), 1.5, ph)
    out["demosaic mhc, 0.75x bicubic"] = lambda p, ph: resized(demosaic(p, "mhc", ph), 0.75, "bicubic")
    return out


def cfa_scores(data: Path, model: str | None, threads: int) -> str:
    """The camera gate's score (:mod:`lida_plugin.cfa`) on every original of the corpus and on the held-out images
    demosaiced: per version, class and number of crops pooled (all of an image's, up to 16, and disjoint groups of
    8, 4, 2), the median, the maximum and the share at or above the threshold for that many crops. ``model`` is
    not used."""
    import zlib

    from lida_plugin import cfa
    from lida_plugin.fingerprint import extract_crops

    versions = cfa_versions()
    got: dict[tuple[str, str, str], list[tuple[float, float]]] = {}  # (score, threshold) per image or crop group
    for e in load_corpus(data):
        px = decode_file(e.path).pixels
        phase = zlib.crc32(e.relpath.encode()) % 4
        for name, fn in versions.items():
            if name != "original" and e.split == "train":
                continue
            c = extract_crops(fn(px, phase), cfa.CROP, cfa.CROPS, cfa.ALIGN)
            got.setdefault((name, e.kind, "all (up to 16)"), []).append((cfa.cfa_score(c), cfa.threshold(len(c))))
            for k in (8, 4, 2):
                got.setdefault((name, e.kind, str(k)), []).extend(
                    (cfa.cfa_score(c[j : j + k]), cfa.threshold(k)) for j in range(0, len(c) - k + 1, k)
                )
    lines = [
        "| version | class | crops | scores | median | max | at or above the threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, kind, k), v in got.items():
        if v:
            a, t = np.asarray(v).T
            lines.append(f"| {name} | {kind} | {k} | {len(a)} | {np.median(a):.2f} | {a.max():.2f} |"
                         f" {100 * float((a >= t).mean()):.1f}% |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lida_exporters.probes", description=__doc__.split("\n\n")[0])
    probes = {
        "ceiling": ceiling,
        "resize-gate": resize_gate,
        "whitening": whitening,
        "real-set-out": real_set_out,
        "resize-real": resize_real,
        "family-out": family_out,
        "camera-real": camera_real,
        "cfa-scores": cfa_scores,
        "head-robustness": head_robustness,
        "jpeg-real": jpeg_real,
        "jpeg-scores": jpeg_scores,
        "noise-real": noise_real,
        "noise-head": noise_head,
        "sharpen-real": sharpen_real,
    }
    p.add_argument("probe", choices=list(probes))
    p.add_argument("--data", default=str(DEFAULT_DATA), help="corpus root (default ../shared/data)")
    p.add_argument("--model", default=None, help="encoder ONNX (default: the bundled model)")
    p.add_argument("--threads", type=int, default=2)
    recipe = "real-set-out, family-out: the recipe's"
    p.add_argument("--det-rzoo", type=int, help=f"{recipe} random decoders in the detection fit (SpamRecipe.det_rzoo)")
    p.add_argument("--det-resize-copies", type=int, help=f"{recipe} resized copies of the train images (ditto)")
    p.add_argument("--det-camera-copies", type=int, help=f"{recipe} camera-processed copies of them (ditto)")
    p.add_argument("--det-jpeg-copies", type=int, help=f"{recipe} JPEG round trips of them (ditto)")
    p.add_argument("--det-noise-copies", type=int, help=f"{recipe} noised copies of the real ones (ditto)")
    p.add_argument("--det-sharpen-copies", type=int, help=f"{recipe} sharpened copies of them (ditto)")
    p.add_argument("--sharpen-generated-only", action="store_true",
                   help="sharpen-real: sharpened copies of the generated train images only")  # fmt: skip
    p.add_argument("--noise-sd", type=_sd_range, metavar="LO,HI",
                   help="noise-real, real-set-out: the copies' noise sd range (default 0.25,1.25)")  # fmt: skip
    p.add_argument("--noise-generated", action="store_true",
                   help="noise-real, real-set-out: noised copies of generated images too")  # fmt: skip
    p.add_argument("--head-noise", action="store_true",
                   help="real-set-out, family-out: the version-2 detection head, which reads the noise floor"
                   " (SpamRecipe.head_noise)")  # fmt: skip
    p.add_argument("--camera-methods", help="camera-real: the copies' demosaicing methods, comma-separated"
                   " (of bilinear, mhc, vng, ea; default bilinear,mhc)")  # fmt: skip
    p.add_argument("--no-camera-noise", action="store_true", help="camera-real: copies without noise")
    p.add_argument("--head-l2", help="noise-head: the version-2 head's L2 strengths, comma-separated;"
                   " real-set-out, family-out: the head's L2 (one number)")  # fmt: skip
    a = p.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"error: data folder {a.data} does not exist", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    fn = probes[a.probe]
    kw = {}
    fields = ("det_rzoo", "det_resize_copies", "det_camera_copies", "det_jpeg_copies", "det_noise_copies",
              "det_sharpen_copies")  # fmt: skip
    given = {k: v for k in fields if (v := getattr(a, k)) is not None}
    if a.noise_sd:
        given["noise_sd"] = a.noise_sd
    if a.noise_generated:
        given["noise_generated"] = True
    if a.camera_methods:
        given["camera_methods"] = tuple(m.strip() for m in a.camera_methods.split(","))
    if a.no_camera_noise:
        given["camera_noise"] = False
    if a.head_noise:
        given["head_noise"] = True
    if a.sharpen_generated_only:
        given["sharpen_generated_only"] = True
    if a.head_l2:
        if a.probe not in ("noise-head", "real-set-out", "family-out"):
            p.error("--head-l2 is for noise-head, real-set-out and family-out")
        try:
            l2s = tuple(float(v) for v in a.head_l2.split(","))
        except ValueError:
            p.error(f"--head-l2 wants numbers separated by commas, got {a.head_l2!r}")
        if a.probe == "noise-head":
            kw["l2s"] = l2s
        elif len(l2s) != 1:
            p.error(f"{a.probe}'s --head-l2 is one number, got {a.head_l2!r}")
        else:
            given["head_l2"] = l2s[0]
    if given:
        if a.probe not in ("real-set-out", "family-out", "camera-real", "jpeg-real", "noise-real", "sharpen-real"):
            p.error("--det-*, --noise-*, --head-noise and --camera-* options are for real-set-out, family-out,"
                    " camera-real, jpeg-real, noise-real and sharpen-real")  # fmt: skip
        from .spam_model import VERSION1, SpamRecipe

        base = {"real-set-out": SpamRecipe(**{**VERSION1.__dict__, "det_resize_copies": 0}),
                "sharpen-real": SpamRecipe()}.get(a.probe, VERSION1)  # fmt: skip
        kw["recipe"] = SpamRecipe(**{**base.__dict__, **given})
    print(fn(Path(a.data), a.model, a.threads, **kw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
