"""ms per crop of ONNX encoders on the same real crops, side by side, one ORT thread. Prints a table.

    git show aa91e10:lida_plugin/data/encoder.onnx > /tmp/enc-before.onnx
    python benchmarks/encoder_crops.py before=/tmp/enc-before.onnx now=lida_plugin/data/encoder.onnx
    python benchmarks/encoder_crops.py graph=lida_plugin/data/encoder.onnx@graph stage=lida_plugin/data/encoder.onnx

Each model runs as the runtime runs it (:class:`lida_plugin.encoder.Encoder` on the CPU, so a model
with the ``spam-counts`` feature stage gets its counts from numpy); ``MODEL.onnx@graph`` makes the
graph count them itself (the model's own ``ScatterElements``).

Crops: the serving grid (16 crops of the bundled model's geometry) of the first PNGs under
``../shared/data`` (sorted), 256 crops. Each model runs ``--passes`` times over them at each batch
size, the models alternating pass by pass so that load on a shared machine falls on all alike;
min and median ms per crop. First, every model's outputs on all the crops are compared with the
first model's (``identical`` = bit for bit, else the max abs difference).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LIDA_SHARED", REPO.parent / "shared")) / "data"


def crops(n: int) -> np.ndarray:
    from lida_plugin.decode import decode_file
    from lida_plugin.encoder import Encoder

    enc = Encoder(device="cpu", threads=1)
    out = []
    for f in sorted(SHARED.rglob("*.png")):
        out.append(enc.crops_for(decode_file(f)))
        if sum(len(c) for c in out) >= n:
            break
    return np.ascontiguousarray(np.concatenate(out)[:n])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", metavar="NAME=MODEL.onnx")
    ap.add_argument("--crops", type=int, default=256)
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--passes", type=int, default=15)
    args = ap.parse_args()
    from lida_plugin.encoder import Encoder

    encoders = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        path, _, how = (path or name).partition("@")
        encoders[name] = Encoder(path, device="cpu", threads=1, feature_stage=how != "graph")
    x = crops(args.crops)
    outs = {n: e.embed_crops(x) for n, e in encoders.items()}
    ref = next(iter(outs))
    for n, o in outs.items():
        same = o.shape == outs[ref].shape and np.array_equal(o, outs[ref])
        diff = "identical" if same else f"max abs diff {np.abs(o - outs[ref]).max():.2e}"
        print(f"# {n}: outputs vs {ref} on {len(x)} crops: {diff}")
    print("| crops per call | " + " | ".join(f"{n} min / median ms" for n in encoders) + " |")
    print("|---:|" + "---:|" * len(encoders))
    for b in args.batch:
        t = {n: [] for n in encoders}
        for _ in range(args.passes):
            for n, e in encoders.items():
                e.batch_size = b
                t0 = time.perf_counter()
                e.embed_crops(x)
                t[n].append(1000 * (time.perf_counter() - t0) / len(x))
        print(f"| {b} | " + " | ".join(f"{min(v):.3f} / {np.median(v):.3f}" for v in t.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
