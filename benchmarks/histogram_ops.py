"""The SPAM graph's histogram step in ONNX Runtime: which op counts fastest? Prints a table.

    python benchmarks/histogram_ops.py                # one 8-crop call's worth of updates

The bundled encoder histograms triplet codes with ``ScatterElements(reduction="add")``: per call of
8 crops, 4 directions x 5 channels x ~3,700 windows = 592k updates into 8 x 6,860 bins (ORT's
profiler puts it at ~45% of the graph's time). This times the same counting with the standard ops
that can express it, one ORT thread, min and median over ``--runs`` calls, against numpy's
``bincount`` as a floor; every op's counts are checked against ``bincount`` first.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _session(nodes, inputs, outputs, inits=()):
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph(nodes, "histogram", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def variants(n: int, bins: int, updates: int):
    """``{name: (session, feed)}`` for each op, fed codes of shape ``[n, updates]`` (or flat)."""
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    codes = rng.integers(0, bins, (n, updates))
    flat = (codes + np.arange(n)[:, None] * bins).reshape(-1)

    def zeros(shape):
        return [
            helper.make_node("ConstantOfShape", ["shp"], ["z"], value=helper.make_tensor("z", TP.FLOAT, [1], [0.0])),
            helper.make_node("Shape", ["idx"], ["ishp"]),
            helper.make_node(
                "ConstantOfShape", ["ishp"], ["ones"], value=helper.make_tensor("o", TP.FLOAT, [1], [1.0])
            ),
        ], [numpy_helper.from_array(np.array(shape, np.int64), "shp")]

    out = [helper.make_tensor_value_info("out", TP.FLOAT, None)]
    found = {}
    for tp, dt in ((TP.INT32, np.int32), (TP.INT64, np.int64)):
        pre, inits = zeros([n, bins])
        scatter = helper.make_node("ScatterElements", ["z", "idx", "ones"], ["out"], axis=1, reduction="add")
        s = _session(pre + [scatter], [helper.make_tensor_value_info("idx", tp, [n, updates])], out, inits)
        found[f"ScatterElements 2-D (axis 1), {dt.__name__} indices"] = (s, {"idx": codes.astype(dt)})
        pre, inits = zeros([n * bins])
        scatter = helper.make_node("ScatterElements", ["z", "idx", "ones"], ["out"], axis=0, reduction="add")
        s = _session(pre + [scatter], [helper.make_tensor_value_info("idx", tp, [n * updates])], out, inits)
        found[f"ScatterElements 1-D, {dt.__name__} indices"] = (s, {"idx": flat.astype(dt)})
    pre, inits = zeros([n * bins])
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "ax"))
    s = _session(pre + [helper.make_node("Unsqueeze", ["idx", "ax"], ["idx2"]),
                        helper.make_node("ScatterND", ["z", "idx2", "ones"], ["out"], reduction="add")],
                 [helper.make_tensor_value_info("idx", TP.INT64, [n * updates])], out, inits)  # fmt: skip
    found["ScatterND, int64 indices"] = (s, {"idx": flat})
    tfidf = helper.make_node("TfIdfVectorizer", ["idx"], ["out"], mode="TF", min_gram_length=1, max_gram_length=1,
                             max_skip_count=0, ngram_counts=[0], ngram_indexes=list(range(bins)),
                             pool_int64s=list(range(bins)))  # fmt: skip
    s = _session([tfidf], [helper.make_tensor_value_info("idx", TP.INT64, [n, updates])], out)
    found["TfIdfVectorizer (mode TF, unigrams)"] = (s, {"idx": codes})
    return found, codes, flat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=int, default=8, help="crops per call (default: 8, a lida batch worker's)")
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    bins, updates = 4 * 5 * 343, 4 * 5 * 3700
    found, codes, flat = variants(args.crops, bins, updates)
    want = np.bincount(flat, minlength=args.crops * bins).astype(np.float32)
    rows = []
    for name, (sess, feed) in found.items():
        got = sess.run(None, feed)[0].reshape(-1)
        if not np.array_equal(got, want):
            print(f"{name}: counts differ from numpy's bincount", file=sys.stderr)
            return 1
        ts = []
        for _ in range(args.runs):
            t = time.perf_counter()
            sess.run(None, feed)
            ts.append(time.perf_counter() - t)
        rows.append((name, 1e3 * min(ts), 1e3 * float(np.median(ts))))
    ts = []
    for _ in range(args.runs):
        t = time.perf_counter()
        np.bincount(flat, minlength=args.crops * bins)
        ts.append(time.perf_counter() - t)
    rows.append(("numpy bincount (not an ONNX op; the floor)", 1e3 * min(ts), 1e3 * float(np.median(ts))))
    print(f"# {codes.size:,} updates into {args.crops} x {bins:,} bins, one thread, {args.runs} calls")
    print("| op | min ms | median ms |\n|---|---:|---:|")
    for name, lo, med in rows:
        print(f"| {name} | {lo:.2f} | {med:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
