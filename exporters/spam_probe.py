"""Representation probe for the residual-statistics model: map variants, the detection column and a
fusion with the shipped CNN, scored on ``lida eval``'s episodes (held-out split, 5 seeds).

    python -m lida_exporters.spam_probe [VARIANT ...]

Variants: ``cnn`` (the shipped encoder's crop embeddings, no map), ``pP_D_EPS`` (SPAM per crop,
PCA ``P``, whitening ``EPS``, ``D`` leading axes, no detection column), ``colC`` (the default map
plus the detection column at weight ``C``: the shipped recipe is ``col0.5``), ``fuseW`` (the
shipped CNN's crop embedding times ``W`` concatenated to SPAM before the default map). Each line:
class-averaged Rank-1 at 1/5/10 shots (all classes, then named generators) and the held-out AUC of a
logistic detection head fitted on the train split's image embeddings. Features are cached under
``runs/cache`` (the same cache as ``lida-train spam --run runs``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lida_plugin.evaluate import metrics as M
from lida_plugin.evaluate.corpus import families, load_corpus
from lida_plugin.evaluate.episodes import make_episode
from lida_plugin.evaluate.metrics import scope_average
from lida_plugin.evaluate.run import episode_scores

from .spam_model import SpamRecipe, apply_map, corpus_features, detection_column, fit_head, fit_map, image_embeddings
from .train import DEFAULT_DATA


def main(argv: list[str] | None = None) -> int:
    variants = (sys.argv[1:] if argv is None else argv) or ["cnn", "p256_128_0.01", "col0.5", "fuse1"]
    ents = load_corpus(DEFAULT_DATA)
    fam = families(ents)
    r = SpamRecipe()
    crops, feats, counts = corpus_features(ents, r, Path("runs/cache"), progress=False)
    owner = np.repeat(np.arange(len(ents)), counts)
    train = np.array([e.split == "train" for e in ents])
    gen = np.array([e.kind == "generated" for e in ents])
    ct = train[owner]
    labels = [ents[i].label for i in owner[ct]]

    def cnn_crops() -> np.ndarray:
        p = Path("runs/cache/cnn_crops.npy")
        if not p.is_file():
            from lida_plugin.encoder import Encoder

            np.save(p, Encoder(None, device="cpu", threads=1).embed_crops(crops))
        return np.load(p)

    print("| variant | Rank-1 1 / 5 / 10-shot, all | named | det. AUC (head, held-out) |\n|---|---|---|---|")
    for v in variants:
        if v == "cnn":
            emb = image_embeddings(cnn_crops(), counts)
        else:
            rr, x, col = r, feats, 0.0
            if v.startswith("p"):
                pca, dim, eps = v[1:].split("_")
                rr = SpamRecipe(pca_dim=int(pca), dim=int(dim), eps=float(eps))
            elif v.startswith("col"):
                col = float(v[3:])
            elif v.startswith("fuse"):
                x = np.hstack([feats, float(v[4:] or 1) * cnn_crops()])
            mean, proj = fit_map(x[ct], labels, rr)
            if col:
                c = detection_column(x, counts, gen, train, mean, proj, SpamRecipe(det_column=col))
                proj = np.hstack([proj, c[:, None]])
            emb = image_embeddings(apply_map(x, mean, proj), counts)
        r1 = {}
        for k in (1, 5, 10):
            rs = [episode_scores(ents, emb, make_episode(ents, k, s), fam) for s in range(5)]
            r1[k] = (
                np.mean([e["rank1_class_avg"] for e in rs]),
                np.mean([scope_average(e["per_class"], "named") for e in rs]),
            )
        h = fit_head(emb[train], gen[train], r.head_l2)
        auc = M.roc_auc(emb[~train] @ np.asarray(h["w"]) + h["b"], gen[~train])
        cells = [" / ".join(f"{100 * r1[k][j]:.1f}" for k in r1) for j in (0, 1)]
        print(f"| {v} | {cells[0]} | {cells[1]} | {auc:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
