"""Similarity probe: how an image is compared with a generator's exemplars, on ``lida eval``'s episodes
(held-out split, 5 seeds), with any contract encoder (default: the bundled one).

    python -m lida_exporters.similarity_probe [--model M.onnx] [--data ../shared/data]

Rows (Rank-1, class-averaged over all classes / over the named generators, at 1 / 5 / 10 shots):

* crop level, per exemplar image: ``image-mean`` (the runtime: cosine of the L2-normalised mean crop
  embeddings), ``chamfer`` (each query crop's best exemplar crop, averaged; both ways, averaged),
  ``softmax`` (a soft maximum over exemplar crops, temperature 0.05, averaged over the query crops);
* class level, from the image similarities: ``knn`` (the runtime: the generator of the nearest
  exemplar), ``prototype`` (the cosine to the normalised mean of a generator's exemplars),
  ``top2-mean`` (the mean of a generator's two best exemplars).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from lida_plugin.decode import decode_file
from lida_plugin.encoder import Encoder
from lida_plugin.evaluate import metrics as M
from lida_plugin.evaluate.corpus import load_corpus
from lida_plugin.evaluate.episodes import make_episode
from lida_plugin.evaluate.metrics import scope_average

from .train import DEFAULT_DATA


def crop_level(crops_of: list[np.ndarray], agg):
    def sims(q: list[int], g: list[int]) -> np.ndarray:
        gallery = np.stack([crops_of[j] for j in g])  # [G, K, D]
        return np.stack([agg(np.einsum("kd,gld->gkl", crops_of[i], gallery)) for i in q])

    return sims


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lida_exporters.similarity_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="encoder (default: the bundled one)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    args = ap.parse_args(argv)
    ents = load_corpus(args.data)
    enc = Encoder(args.model, device="cpu")
    crops_of = [enc.embed_crops(enc.crops_for(decode_file(e.path))) for e in ents]
    img = np.stack([c.mean(0) for c in crops_of])
    img /= np.linalg.norm(img, axis=1, keepdims=True)

    def image_mean(q, g):
        return img[q] @ img[g].T

    def softmax(p, t=0.05):
        return (t * np.log(np.exp(p / t).mean(2))).mean(1)

    image_rows = {
        "image-mean (the runtime)": image_mean,
        "chamfer (both ways)": crop_level(crops_of, lambda p: 0.5 * (p.max(2).mean(1) + p.max(1).mean(1))),
        "softmax over exemplar crops": crop_level(crops_of, softmax),
    }

    def by_class(kind: str):
        def pick(q, g, labels):
            s = img[q] @ img[g].T
            if kind == "knn":
                return np.stack([s[:, labels == lab].max(1) for lab in np.unique(labels)], 1)
            if kind == "top2-mean":
                return np.stack([np.sort(s[:, labels == lab], 1)[:, -2:].mean(1) for lab in np.unique(labels)], 1)
            protos = np.stack([img[np.asarray(g)[labels == lab]].mean(0) for lab in np.unique(labels)])
            return img[q] @ (protos / np.linalg.norm(protos, axis=1, keepdims=True)).T

        return pick

    print("| similarity | 1 shot all / named | 5 shots | 10 shots |\n|---|---|---|---|")
    rows = [(n, f, False) for n, f in image_rows.items()]
    rows += [(f"class: {k}", by_class(k), True) for k in ("knn", "prototype", "top2-mean")]
    for name, fn, classwise in rows:
        cells = []
        for k in (1, 5, 10):
            r_all, r_named = [], []
            for seed in range(5):
                ep = make_episode(ents, k, seed)
                gl = np.array([ents[i].label for i in ep.gallery])
                if classwise:
                    sims, labels = fn(ep.queries, ep.gallery, gl), list(np.unique(gl))
                else:
                    sims, labels = fn(ep.queries, ep.gallery), list(gl)
                rm = M.retrieval_metrics(sims, labels, [ents[i].label for i in ep.queries])
                r_all.append(rm["rank1_class_avg"])
                r_named.append(scope_average(rm["per_class"], "named"))
            cells.append(f"{100 * np.mean(r_all):.1f} / {100 * np.mean(r_named):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
