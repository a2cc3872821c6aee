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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("features", nargs="+", help="feature names, '+'-joined for a concatenation")
    ap.add_argument("--prefix", default="ldm-sr", help="classes whose name starts with this (default ldm-sr)")
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
    print("| feature | dims | held-out accuracy (best over L2) | train accuracy |\n|---|---:|---:|---:|")
    for name in args.features:
        per_crop = np.hstack([feature(p, crops, spam) for p in name.split("+")])
        img = np.stack([per_crop[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])[sel]
        acc, tr_acc = ceiling(img, labels, train)
        print(f"| {name} | {img.shape[1]} | {100 * acc:.1f} | {100 * tr_acc:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
