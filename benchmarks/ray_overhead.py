"""Ray's fixed costs on this machine, apart from lida's work: what a ``lida batch --engine ray`` job
pays before its first record and after its last. Prints a table.

    python benchmarks/ray_overhead.py                # 2 CPUs, 3 repetitions of the pipeline

Rows: ``import ray`` (+ ``ray.data``) in a fresh interpreter; ``ray.init(num_cpus=N)`` of a local
instance (no dashboard, as the engine starts it); a Ray Data pipeline of 64 items through an actor
pool of N actors whose ``__call__`` does nothing (the time to its first batch, i.e. Ray Data's
start-up plus its actor processes' start; repeated, the first on a fresh instance); the same with
each actor building lida's attributor (the bundled model and store: what an ``EncodeStage`` adds);
``ray.shutdown()``. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np


class Noop:
    def __init__(self, build: bool = False) -> None:
        if build:
            from lida_plugin.batch.worker import JobConfig, build_attributor

            self.att = build_attributor(JobConfig(threads=1, batch_size=8))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"path": batch["path"]}


def pipeline(ray, actors: int, build: bool) -> tuple[float, float]:
    """``(s to the first batch, s to the last)`` of 64 items through ``actors`` Noop actors."""
    t = time.perf_counter()
    ds = ray.data.from_items([{"path": str(i)} for i in range(64)]).map_batches(
        Noop, fn_constructor_args=(build,), batch_size=16, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1
    )
    first = None
    for _ in ds.iter_batches(batch_size=None):
        if first is None:
            first = time.perf_counter() - t
    return first, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    imp = subprocess.run(
        [sys.executable, "-c", "import time; t = time.perf_counter(); import ray, ray.data;"
         " print(time.perf_counter() - t)"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [("import ray, ray.data (fresh interpreter)", float(imp.stdout.split()[-1]))]
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    rows.append((f"ray.init(num_cpus={args.cpus})", time.perf_counter() - t))
    ray.data.DataContext.get_current().enable_progress_bars = False
    for build in (False, True):
        what = "actors build lida's attributor" if build else "actors do nothing"
        for i in range(args.repeat):
            first, total = pipeline(ray, args.cpus, build)
            rows.append((f"pipeline, {args.cpus} actors, {what}, run {i + 1}: first batch / all 64", (first, total)))
    t = time.perf_counter()
    ray.shutdown()
    rows.append(("ray.shutdown()", time.perf_counter() - t))
    print(f"# Ray {ray.__version__}, {args.cpus} CPUs")
    print("| step | seconds |\n|---|---:|")
    for name, v in rows:
        print(f"| {name} | {v[0]:.2f} / {v[1]:.2f} |" if isinstance(v, tuple) else f"| {name} | {v:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
