#!/usr/bin/env python
"""Cost of the lossy-input detector per image (:func:`lida_plugin.lossy.lossy_evidence`).

    python benchmarks/lossy_cost.py [--images 16] [--size 512] [--detector PATH]

Makes ``--images`` synthetic ``size x size`` JPEGs (q85, 4:2:0) in memory, decodes each with the
runtime's decoder (not counted) and times ``lossy_evidence`` on it (features + score + item),
single-threaded. Prints the median and the 90th percentile of the CPU time (``process_time``:
what the work costs, whatever else shares the cores) and of the wall time, for the shipped
feature and, for comparison, every feature/window the detector can be trained with.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from lida_plugin.decode import decode_bytes  # noqa: E402
from lida_plugin.lossy import FEATURES, features, jpeg_bytes, load_detector, lossy_evidence  # noqa: E402


def images(n: int, size: int) -> list:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(n):
        base = np.stack([(xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1) + 40 * c) % 256 for c in range(3)], -1)
        px = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        out.append(decode_bytes(jpeg_bytes(px, 85, 2), f"bench-{i}.jpg"))
    return out


def timed(fn, decs) -> dict:
    fn(decs[0])  # warm-up
    cpu, wall = [], []
    for d in decs:
        c, w = time.process_time(), time.perf_counter()
        fn(d)
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    q = lambda v, p: round(float(np.percentile(v, p)), 2)  # noqa: E731
    return {"cpu_ms_median": q(cpu, 50), "cpu_ms_p90": q(cpu, 90), "wall_ms_median": q(wall, 50),
            "wall_ms_p90": q(wall, 90)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--detector")
    args = p.parse_args()
    det = load_detector(args.detector)
    decs = images(args.images, args.size)
    rows = {f"lossy_evidence ({det.feature}, window {det.max_side or 'whole'})": timed(
        lambda d: lossy_evidence(d, det), decs)}  # fmt: skip
    for feat, side in [("spam-rgb", 0), ("spam-y", 256)] + [(f, 512) for f in FEATURES]:
        fn = functools.partial(lambda d, f, s: features(d.pixels, f, 3, s), f=feat, s=side)
        rows[f"features only: {feat}, window {side or 'whole'}"] = timed(fn, decs)
    print(json.dumps({"images": args.images, "size": args.size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
