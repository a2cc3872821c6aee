"""Feature probe: per-crop residual features and their fusions, each through the same whitening map,
scored on ``lida eval``'s episodes (held-out split, 5 seeds) and on a leave-family-out protocol.

    python -m lida_exporters.feature_probe spam spamc spam+spamc spam+spamc+phase spam+spamc:384

A variant is ``+``-joined feature names (each z-scored on the train crops and scaled to unit total
variance, times an optional ``*W``), then ``:PCA[:EPS]`` for the map (default 256, 0.01), then an
optional ``@SRC[/K]`` (several joined by ``,``): the map is also fitted on every K-th crop of an extra
source, each of its pipelines a class of the within-class whitening: ``zoo``, the generator zoo
(:mod:`lida_exporters.zoo`: the train-split real photos through 15 known pipelines), or ``rzooN``, N
random decoders (:mod:`lida_exporters.rzoo`, 16 train-split photos each); no detection column.
Features, per 64x64 crop of the serving grid (cached in ``runs/cache``):

* ``spam``: SPAM of R, G, B (:func:`lida_plugin.residual.spam_features`, 2,058);
* ``spamc``: SPAM of R-G and B-G (the colour part of :func:`lida_plugin.residual.colour_spam_features`, 1,372);
  ``spamc4`` the same with T = 4 (2,916); ``spamrb``: SPAM of R-B (686);
* ``srm``: 4th-order co-occurrences of the 2nd-order residual (q 2, T 2), rows and columns (1,250);
* ``spec``: log power spectrum of the 4-neighbour Laplacian residual, channel mean (64x33);
* ``phase``: Laplacian residual energy and mean per position modulo 8 (the VAE's upsampling grid; 384);
* ``xc``: joint histogram of the R, G, B first differences at one pixel, clipped to +-3 (686).
* ``spamp``: SPAM's straight-direction transition probabilities of R, G, B, R-G, B-G computed
  separately on the even and the odd columns (rows for the vertical directions) of the window's
  first pixel, kept as ``|P_even - P_odd|``: the 2-pixel periodicity a 2x upsampler leaves, in a
  form that does not change when the crop moves by one pixel (1,715);
* ``cnn``: the per-crop embedding of a CNN encoder in ONNX (default: the CNN bundled before the
  residual models, ``git show 81d8882:lida_plugin/data/encoder.onnx > runs/cache/cnn-81d8882.onnx``;
  another one by ``LIDA_PROBE_CNN=path``, or ``cnn=PATH`` as the feature name, cached by the file's
  hash), for fusions with the residual features.

Columns: class-averaged Rank-1 at 1/5/10 shots (all classes, named generators), the held-out AUC of
a logistic head on the image embeddings, and **leave-family-out** 1-shot Rank-1: generator
families split into 5 folds; each fold's generators are evaluated (gallery: them + real) with the
map fitted on all train crops ("in-corpus map") or on the train crops *without* that fold's
families ("held-out map"); the second is a proxy for generators nobody tuned on. Last, the
leave-family-out detection AUC: map and head fitted without the fold's families, scored on the
fold's held-out generated images against the held-out real photos, pooled over the folds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from lida_plugin.evaluate import metrics as M
from lida_plugin.evaluate.corpus import families, load_corpus
from lida_plugin.evaluate.episodes import make_episode
from lida_plugin.evaluate.metrics import scope_average
from lida_plugin.evaluate.run import episode_scores
from lida_plugin.residual import _spam_blocks, colour_channels

from .spam_model import (
    SpamRecipe,
    apply_map,
    corpus_features,
    crop_features,
    fit_head,
    fit_map,
    image_embeddings,
    rzoo_crops,
    zoo_crops,
)
from .train import DEFAULT_DATA

CACHE = Path("runs/cache")
S = 64
#: The serving crop geometry the features are computed on (``--crop-count N`` changes the count).
GEOM = SpamRecipe(colour=False)


def _cached(stem: str) -> Path:
    """A feature cache file, named by the crop count unless it is the default (16: older caches)."""
    suffix = "" if GEOM.crop_count == SpamRecipe().crop_count else f"-c{GEOM.crop_count}"
    return CACHE / f"{stem}{suffix}.npy"


def hp(x):  # 4-neighbour Laplacian residual, wrap-around, float32 [K,3,S,S]
    x = x.astype(np.float32)
    return 4 * x - np.roll(x, 1, 2) - np.roll(x, -1, 2) - np.roll(x, 1, 3) - np.roll(x, -1, 3)


def _chunked(fn):
    """Apply a feature function to 256 crops at a time (bounded memory) and stack the rows."""

    def run(crops, *args):
        return np.concatenate([fn(crops[i : i + 256], *args) for i in range(0, len(crops), 256)])

    return run


@_chunked
def f_spec(crops):
    r = hp(crops)
    p = (np.abs(np.fft.rfft2(r)) ** 2).mean(1)  # [k,S,S/2+1]
    lp = np.log(p + 1e-2)
    lp -= lp.mean((1, 2), keepdims=True)
    return lp.reshape(len(lp), -1).astype(np.float32)


@_chunked
def f_phase(crops, m=8):
    r = hp(crops)
    k, c, s, _ = r.shape
    g = r.reshape(k, c, s // m, m, s // m, m)
    e = (g**2).mean((2, 4))
    e = np.log((e + 1e-2) / (e.mean((2, 3), keepdims=True) + 1e-2))
    sg = g.mean((2, 4)) / np.sqrt((g**2).mean((2, 3, 4, 5)) + 1e-2)[:, :, None, None]
    return np.concatenate([e.reshape(k, -1), sg.reshape(k, -1)], 1).astype(np.float32)


@_chunked
def f_srm(crops, q=2, T=2):
    n = 2 * T + 1
    x = crops.astype(np.int32)
    k = len(x)
    feats = []
    for ax in (3, 2):
        if ax == 3:
            r = x[:, :, :, :-2] - 2 * x[:, :, :, 1:-1] + x[:, :, :, 2:]
        else:
            r = x[:, :, :-2, :] - 2 * x[:, :, 1:-1, :] + x[:, :, 2:, :]
        d = np.clip(np.round(r / q), -T, T).astype(np.int64) + T
        if ax == 3:
            a, b, c, e = d[..., :-3], d[..., 1:-2], d[..., 2:-1], d[..., 3:]
        else:
            a, b, c, e = d[:, :, :-3], d[:, :, 1:-2], d[:, :, 2:-1], d[:, :, 3:]
        code = ((a * n + b) * n + c) * n + e + (np.arange(k)[:, None, None, None] * n**4)
        h = np.bincount(code.ravel(), minlength=k * n**4).reshape(k, n**4).astype(np.float32)
        feats.append(h / h.sum(1, keepdims=True))
    return np.concatenate(feats, 1)


def f_spamc(crops, T=3):
    return np.asarray([_spam_blocks(colour_channels(c)[3:], T).reshape(-1) for c in crops], np.float32)


def f_spamc4(crops):
    return f_spamc(crops, 4)


def f_spamrb(crops, T=3):
    return np.asarray([_spam_blocks(c[0:1].astype(np.int16) - c[2:3], T).reshape(-1) for c in crops], np.float32)


@_chunked
def f_xc(crops, T=3):
    n = 2 * T + 1
    x = crops.astype(np.int16)
    k = len(x)
    blocks = []
    for dirs in (((0, 1), (1, 0)), ((1, 1), (1, -1))):
        h = np.zeros((k, n**3), np.float64)
        for dy, dx in dirs:
            d = (
                x[:, :, : S - dy, : S - dx] - x[:, :, dy:, dx:]
                if dx >= 0
                else x[:, :, : S - dy, 1:] - x[:, :, dy:, :-1]
            )
            d = np.clip(d, -T, T) + T
            for dd in (d, 2 * T - d):  # the direction and its reverse
                code = (dd[:, 0].astype(np.int64) * n + dd[:, 1]) * n + dd[:, 2] + np.arange(k)[:, None, None] * n**3
                h += np.bincount(code.ravel(), minlength=k * n**3).reshape(k, n**3)
        blocks.append(h / h.sum(1, keepdims=True))
    return np.concatenate(blocks, 1).astype(np.float32)


def f_spamp(crops, T=3):
    n = 2 * T + 1
    x = colour_channels(crops)  # R, G, B, R-G, B-G
    k, c = x.shape[:2]
    out = np.zeros((k, c, n**3))
    offset = (np.arange(k * c, dtype=np.int64) * n**3).reshape(k, c, 1, 1)
    for vertical in (False, True):
        xx = x.transpose(0, 1, 3, 2) if vertical else x  # the window runs along the last axis
        d = np.clip(xx[..., :-1] - xx[..., 1:], -T, T) + T
        code = (d[..., :-2].astype(np.int64) * n + d[..., 1:-1]) * n + d[..., 2:] + offset
        probs = []
        for parity in (0, 1):
            cnt = np.bincount(code[..., parity::2].ravel(), minlength=k * c * n**3).reshape(k, c, n, n, n)
            cnt = cnt + cnt[:, :, ::-1, ::-1, ::-1].transpose(0, 1, 4, 3, 2)  # and the reverse direction
            m = cnt.reshape(k, c, n * n, n).astype(np.float64)
            den = m.sum(-1, keepdims=True)
            probs.append(np.divide(m, den, out=np.zeros_like(m), where=den > 0).reshape(k, c, -1))
        out += np.abs(probs[0] - probs[1]) / 2
    return out.reshape(k, -1).astype(np.float32)


def f_cnn(crops, path: str | None = None):
    import os

    from lida_plugin.encoder import Encoder

    enc = Encoder(path or os.environ.get("LIDA_PROBE_CNN", str(CACHE / "cnn-81d8882.onnx")), threads=1)
    return enc.embed_crops(crops)


FEATS = {
    "spamp": _chunked(f_spamp),
    "cnn": f_cnn,
    "spamc4": f_spamc4,
    "spamrb": f_spamrb,
    "xc": f_xc,
    "spec": f_spec,
    "phase": f_phase,
    "srm": f_srm,
    "spamc": f_spamc,
}


def feature(name, crops, spam):
    if name == "spam":
        return spam
    if name.startswith("cnn="):  # another CNN encoder, cached by its file's hash
        import hashlib

        path = name[4:]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        f = _cached(f"probe-cnn-{digest}")
        if not f.is_file():
            np.save(f, f_cnn(crops, path))
        return np.load(f)
    f = _cached(f"probe-{name}")
    if not f.is_file():
        t = time.time()
        np.save(f, FEATS[name](crops))
        print(f"# {name}: {time.time() - t:.0f} s", flush=True)
    return np.load(f)


def _extra_source(src: str) -> tuple[str, np.ndarray, np.ndarray]:
    """``(cache stem, crops, labels)`` of one ``@`` source: ``zoo`` (the 15 known pipelines) or
    ``rzooN`` (N random decoders of :mod:`lida_exporters.rzoo`, 16 photos each)."""
    if src == "zoo":
        return "probe-zoo", *zoo_crops(CACHE, GEOM)
    if src.startswith("rzoo") and src[4:].isdigit():
        return f"probe-{src}", *rzoo_crops(CACHE, int(src[4:]), r=GEOM)
    raise SystemExit(f"unknown variant suffix @{src} (only zoo or rzooN, each with an optional /K)")


def zoo_feature(name: str, src: str = "zoo") -> np.ndarray:
    """Feature ``name`` of every crop of the extra source ``src`` (cached like the corpus' ones)."""
    stem, crops, _ = _extra_source(src)
    f = _cached(f"{stem}-{name}")
    if not f.is_file():
        t = time.time()
        x = _chunked(lambda c: crop_features(c, 3, False))(crops) if name == "spam" else FEATS[name](crops)
        np.save(f, x)
        print(f"# {src} {name}: {time.time() - t:.0f} s", flush=True)
    return np.load(f)


def variant_features(
    v: str, crops: np.ndarray, spam: np.ndarray, ct: np.ndarray
) -> tuple[np.ndarray, SpamRecipe, tuple[np.ndarray, np.ndarray] | None]:
    """The crop features of a variant string (module doc), the map recipe it asks for, and with
    ``@SRC[/K][,SRC[/K]]`` the extra sources' crop features (normalised like the corpus') and labels,
    else None."""
    v, _, suffix = v.partition("@")
    name, *opt = v.split(":")
    r = SpamRecipe(pca_dim=int(opt[0]) if opt else 256, eps=float(opt[1]) if len(opt) > 1 else 0.01)
    sources = [(s.split("/")[0], int(s.split("/")[1]) if "/" in s else 1) for s in suffix.split(",") if s]
    xs, zs = [], [[] for _ in sources]
    for part in name.split("+"):
        p, _, w = part.partition("*")
        f = feature(p, crops, spam)
        mu, sd = f[ct].mean(0), f[ct].std(0)
        sd = np.where(sd > 1e-8, sd, 1.0)
        xs.append(float(w or 1.0) * (f - mu) / sd / np.sqrt(f.shape[1]))
        for z, (src, every) in zip(zs, sources, strict=True):
            z.append(float(w or 1.0) * (zoo_feature(p, src)[::every] - mu) / sd / np.sqrt(f.shape[1]))
    extra = None
    if sources:
        feats = np.concatenate([np.hstack(z) for z in zs]).astype(np.float32)
        labels = np.concatenate([_extra_source(src)[2][::every] for src, every in sources])
        extra = (feats, labels)
    return np.hstack(xs).astype(np.float32), r, extra


def _fit(x: np.ndarray, labels: np.ndarray, mask: np.ndarray, r: SpamRecipe, extra) -> tuple[np.ndarray, np.ndarray]:
    """The map fitted on the ``mask`` crops, plus the zoo's when ``extra`` holds them."""
    if extra is None:
        return fit_map(x[mask], labels[mask], r, standardize=False)
    return fit_map(np.concatenate([x[mask], extra[0]]), np.concatenate([labels[mask], extra[1]]), r, standardize=False)


def leave_family_out(ents, fam, x, labels, owner, ct, counts, r, emb, refit: bool, extra=None) -> tuple[float, float]:
    """Mean 1-shot Rank-1 (%) of the generators of 5 family folds, each against a gallery of its own
    generators + real; with ``refit`` the map is fitted without the fold's families. Also the detection
    AUC of a head fitted on the train images outside the fold, on the fold's held-out generated
    images against the held-out real photos, pooled over folds (NaN without ``refit``)."""
    famlist = sorted({e.family for e in ents if e.kind == "generated"})
    gen = np.array([e.kind == "generated" for e in ents])
    train = np.array([e.split == "train" for e in ents])
    acc, det_s, det_y = [], [], []
    for fold in [famlist[i::5] for i in range(5)]:
        keep = np.array([e.kind == "real" or e.family in fold for e in ents])
        if refit:
            fit = ct & ~np.array([ents[i].kind == "generated" and ents[i].family in fold for i in owner])
            m2, p2 = _fit(x, labels, fit, r, extra)
            emb = image_embeddings(apply_map(x, m2, p2), counts)
            infold = gen & keep
            h = fit_head(emb[train & ~infold], gen[train & ~infold], 1e-2)
            q = ~train & (infold | ~gen)
            det_s.append(emb[q] @ np.asarray(h["w"]) + h["b"])
            det_y.append(gen[q])
        sub = [e for e, kk in zip(ents, keep, strict=True) if kk]
        for s in range(5):
            pc = episode_scores(sub, emb[keep], make_episode(sub, 1, s), fam)["per_class"]
            acc.extend(vv["rank1"] for c, vv in pc.items() if c != "real")
    auc = M.roc_auc(np.concatenate(det_s), np.concatenate(det_y)) if det_s else float("nan")
    return 100 * float(np.mean(acc)), float(auc)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import dataclasses

    global GEOM
    ap = argparse.ArgumentParser(prog="python -m lida_exporters.feature_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="feature variants (see the module doc)")
    ap.add_argument("--crop-count", type=int, default=SpamRecipe().crop_count,
                    help="serving crops per image (a 512x512 image has room for 64 of 64x64; default 16)")  # fmt: skip
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    GEOM = dataclasses.replace(SpamRecipe(colour=False), crop_count=args.crop_count)
    argv = args.variants
    ents = load_corpus(DEFAULT_DATA)
    fam = families(ents)
    crops, spam, counts = corpus_features(ents, GEOM, CACHE, progress=False)
    owner = np.repeat(np.arange(len(ents)), counts)
    train = np.array([e.split == "train" for e in ents])
    gen = np.array([e.kind == "generated" for e in ents])
    ct = train[owner]
    labels = np.array(["real" if ents[i].kind == "real" else ents[i].label for i in owner])
    print("| variant | Rank-1 1/5/10 all | named | AUC | LFO 1-shot (in-corpus map) | LFO 1-shot (held-out map)"
          " | LFO det. AUC |\n|---|---|---|---|---|---|---|", flush=True)  # fmt: skip
    for v in argv:
        x, r, extra = variant_features(v, crops, spam, ct)
        mean, proj = _fit(x, labels, ct, r, extra)
        emb = image_embeddings(apply_map(x, mean, proj), counts)
        r1 = {}
        for k in (1, 5, 10):
            rs = [episode_scores(ents, emb, make_episode(ents, k, s), fam) for s in range(5)]
            r1[k] = (np.mean([e["rank1_class_avg"] for e in rs]),
                     np.mean([scope_average(e["per_class"], "named") for e in rs]))  # fmt: skip
        h = fit_head(emb[train], gen[train], 1e-2)
        auc = M.roc_auc(emb[~train] @ np.asarray(h["w"]) + h["b"], gen[~train])
        lfo = [
            leave_family_out(ents, fam, x, labels, owner, ct, counts, r, emb, refit, extra) for refit in (False, True)
        ]
        cells = [" / ".join(f"{100 * r1[k][j]:.1f}" for k in r1) for j in (0, 1)]
        row = f"| {v} | {cells[0]} | {cells[1]} | {auc:.4f} | {lfo[0][0]:.1f} | {lfo[1][0]:.1f} | {lfo[1][1]:.4f} |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
