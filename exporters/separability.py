"""How separable are some classes by a feature at all? A supervised ceiling for retrieval.

    python -m lida_exporters.separability --prefix ldm-sr spamc spam srm spec cnn

For the classes whose name starts with ``--prefix`` (default ``ldm-sr``: the seven checkpoints of one
super-resolution LDM, the same faces through each), a multinomial logistic regression is fitted on
the **train halves** (image feature = mean of the 16 serving crops' features, z-scored on the train
images) and scored on the **held-out halves**: the accuracy of a classifier that saw every train
image of every class. k-shot retrieval among the same classes, which sees k images per class and
no labels in fitting, is not expected to beat it; so it bounds what any map or head fitted on these
features can reach on those classes. Reported: the best held-out accuracy over the L2 strengths
tried (which makes it an optimistic bound), and the train accuracy.

``--crop-heads`` adds two nonlinear-capable heads fitted on the **crops** (every train crop labelled
with its image's class; z-score and PCA to 1,024 dims on the train crops, fewer when there are
under 4,096 train crops), an image's class being
the argmax of the sum of its crops' log-probabilities: a linear softmax and an MLP (one hidden GELU
layer of 512 or 1,024 units, dropout 0.2 / 0.3, AdamW, 40 epochs), each the best held-out accuracy
over its settings. They ask whether a nonlinear or per-crop map could see what the linear
image-mean head cannot.

Features are the cached per-crop arrays of :mod:`lida_exporters.feature_probe` (``spam``, ``spamc``,
``srm``, ``spec``, ``phase``, ``xc``, ``spamp``, ``cnn``; ``spam+spamc`` is the bundled model's
input); a missing cache is computed first (minutes).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from lida_plugin.evaluate.corpus import load_corpus

from .feature_probe import CACHE, feature
from .spam_model import SpamRecipe, corpus_features
from .train import DEFAULT_DATA

L2 = (1e-1, 1e-2, 1e-3)
#: ``(hidden units or 0 for linear, AdamW weight decay)`` of the crop-level heads (``--crop-heads``).
CROP_LINEAR = ((0, 0.01), (0, 0.1), (0, 1.0))
CROP_MLP = ((512, 0.01), (512, 1.0), (1024, 0.01), (1024, 1.0))


def ceiling(x: np.ndarray, labels: np.ndarray, train: np.ndarray) -> tuple[float, float]:
    """``(best held-out accuracy, its train accuracy)`` of an L2 logistic regression over :data:`L2`."""
    import torch

    classes = sorted(set(labels))
    y = torch.tensor([classes.index(v) for v in labels])
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
    z = torch.tensor((x - mu) / sd, dtype=torch.float32)
    tr, te = torch.tensor(train), torch.tensor(~train)
    best = (0.0, 0.0)
    for wd in L2:
        torch.manual_seed(0)
        lin = torch.nn.Linear(z.shape[1], len(classes))
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=500)

        def closure(opt=opt, lin=lin, wd=wd):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin(z[tr]), y[tr]) + wd * (lin.weight**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            pred = lin(z).argmax(1)
        acc = ((pred[te] == y[te]).float().mean().item(), (pred[tr] == y[tr]).float().mean().item())
        best = max(best, acc)
    return best


def crop_ceiling(
    crops_x: np.ndarray, owner: np.ndarray, labels: np.ndarray, train: np.ndarray, settings, pca: int = 1024
) -> tuple[float, float]:
    """``(best held-out accuracy, its train accuracy)`` over ``settings`` of a crop-level head:
    ``crops_x[j]`` belongs to image ``owner[j]`` (an index into ``labels``/``train``); the image's
    prediction is the argmax of its crops' summed log-probabilities."""
    import torch

    classes = sorted(set(labels))
    y_img = np.array([classes.index(v) for v in labels])
    tr = train[owner]
    mu, sd = crops_x[tr].mean(0), crops_x[tr].std(0) + 1e-6
    z = (crops_x - mu) / sd
    # at most a quarter as many axes as train crops: the last axes of a small train set have ~0 variance
    # there, and scaling them to unit variance would blow up the held-out crops' noise along them
    vt = np.linalg.svd(z[tr], full_matrices=False)[2][: min(pca, int(tr.sum()) // 4)]
    z = z @ vt.T
    z = torch.tensor(z / z[tr].std(0), dtype=torch.float32)
    y = torch.tensor(y_img[owner])
    tr_idx = torch.tensor(np.flatnonzero(tr))
    best = (0.0, 0.0)
    for hidden, wd in settings:
        torch.manual_seed(0)
        if hidden:
            net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(z.shape[1], hidden), torch.nn.GELU(),
                                      torch.nn.Dropout(0.3), torch.nn.Linear(hidden, len(classes)))  # fmt: skip
        else:
            net = torch.nn.Linear(z.shape[1], len(classes))
        opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=wd)
        for _ in range(40):
            net.train()
            for b in tr_idx[torch.randperm(len(tr_idx))].split(256):
                loss = torch.nn.functional.cross_entropy(net(z[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            lp = torch.log_softmax(net(z), 1).numpy()
        votes = np.zeros((len(labels), len(classes)))
        np.add.at(votes, owner, lp)
        right = votes.argmax(1) == y_img
        best = max(best, (right[~train].mean(), right[train].mean()))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("features", nargs="+", help="feature names, '+'-joined for a concatenation")
    ap.add_argument("--prefix", default="ldm-sr", help="classes whose name starts with this (default ldm-sr)")
    ap.add_argument("--crop-heads", action="store_true", help="also crop-level linear and MLP heads (minutes)")
    args = ap.parse_args(argv)
    ents = load_corpus(DEFAULT_DATA)
    crops, spam, counts = corpus_features(ents, SpamRecipe(colour=False), CACHE, progress=False)
    bounds = np.r_[0, np.cumsum(counts)]
    sel = np.array([i for i, e in enumerate(ents) if e.kind == "generated" and e.label.startswith(args.prefix)])
    if not len(sel):
        print(f"no generated class starts with {args.prefix!r}", file=sys.stderr)
        return 2
    labels = np.array([ents[i].label for i in sel])
    train = np.array([ents[i].split == "train" for i in sel])
    k = len(set(labels))
    print(f"# {k} classes starting with {args.prefix!r}: {int(train.sum())} train / {int((~train).sum())} held-out"
          f" images; chance {100 / k:.1f}%")  # fmt: skip
    head = "| feature | dims | held-out accuracy (best over L2) | train accuracy |"
    rule = "|---|---:|---:|---:|"
    if args.crop_heads:
        head += " crop-level linear: held-out / train | crop-level MLP: held-out / train |"
        rule += "---:|---:|"
    print(f"{head}\n{rule}")
    for name in args.features:
        per_crop = np.hstack([feature(p, crops, spam) for p in name.split("+")])
        img = np.stack([per_crop[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])[sel]
        acc, tr_acc = ceiling(img, labels, train)
        row = f"| {name} | {img.shape[1]} | {100 * acc:.1f} | {100 * tr_acc:.1f} |"
        if args.crop_heads:
            idx = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in sel])
            owner = np.repeat(np.arange(len(sel)), [bounds[i + 1] - bounds[i] for i in sel])
            for settings in (CROP_LINEAR, CROP_MLP):
                a, t = crop_ceiling(per_crop[idx].astype(np.float32), owner, labels, train, settings)
                row += f" {100 * a:.1f} / {100 * t:.1f} |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
