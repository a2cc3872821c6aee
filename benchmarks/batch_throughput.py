"""Images/s for ``lida attribute`` (one process), ``lida batch`` (local engine) and ``lida batch --engine ray``,
side by side in one run on the same files; plus the per-worker stage costs that bound them.

    python benchmarks/batch_throughput.py                  # 2,000 PNGs from ../shared/data (else synthetic 512x512)
    python benchmarks/batch_throughput.py --n 500 --synthetic --engines attribute local
    python benchmarks/batch_throughput.py --engines local ray-warm     # a running Ray that has served a job

Each row is one command run as a subprocess, timed wall-clock from start to exit (model load,
listing, worker/Ray start-up and the Parquet writes included), with the same model (the bundled
encoder unless ``--model``), the bundled default store, and the files warm in the page cache
(a warm-up pass reads them first). ``lida attribute`` runs with its defaults (ORT on all cores,
2 decode threads); ``lida batch`` with its defaults (one worker / actor pair per core, 1 ORT
thread each). Each row also gives the CPU time the command used (user + system, its workers
included; Ray's daemons only as far as they are reaped) and the 1-minute load average before and
after it: on a shared machine, compare rows only when the load was low.

The stage costs are measured in this process with one thread: per image, read + decode + crop
(:meth:`Attributor.prepare`) and embed + detect + retrieve (:meth:`Attributor.finish`, batches
of 16 images, the encoder called with a ``lida batch`` worker's batch size). Their sum is the cost
of one worker on one core; the larger is the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LIDA_SHARED", REPO.parent / "shared")) / "data"


def make_corpus(dest: Path, n: int, synthetic: bool) -> str:
    dest.mkdir(parents=True, exist_ok=True)
    pngs = [] if synthetic else sorted(SHARED.rglob("*.png"))
    if pngs:
        for i in range(n):
            src = pngs[i % len(pngs)]
            out = dest / f"{i:05d}-{src.name}"
            try:
                os.link(src, out)  # same bytes under a new name, no disk cost
            except OSError:
                shutil.copyfile(src, out)
        return f"{n} PNGs from {SHARED} ({len(pngs)} distinct files, cycled)"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(dest / f"{i:05d}.png")
    return f"{n} synthetic 512x512 PNGs (random pixels)"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """``(wall s, CPU s, exit code, stderr tail)``. CPU: user + system time of the command and the
    processes it waited for (its workers; Ray's processes only as far as they are reaped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.returncode, p.stderr[-2000:]


def start_ray_head(env: dict[str, str], cpus: int | None) -> None:
    """``ray start --head`` with this machine's (or ``cpus``) CPUs, no dashboard; waits until it is up."""
    from lida_plugin.batch.local import default_workers  # the cores lida batch itself would use

    cpus = cpus or default_workers()
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--num-cpus={cpus}",
           "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:  # e.g. a Ray already running here: not ours to stop
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:]
        raise SystemExit(f"ray start --head failed (exit {p.returncode}): {' '.join(tail)}; stop the running Ray"
                         " (ray stop) or leave out the ray-cluster and ray-warm rows")  # fmt: skip
    time.sleep(5)  # let its idle worker processes finish starting, as on a cluster that has been up a while


def stage_costs(files: list[Path], model: str | None, k: int = 200) -> dict[str, float]:
    """ms per image for prepare (read+decode+crops) and finish (embed+detect+retrieve), one thread."""
    sys.path.insert(0, str(REPO))
    from lida_plugin.batch.command import WORKER_BATCH
    from lida_plugin.batch.worker import JobConfig, build_attributor

    att = build_attributor(JobConfig(model=model, threads=1, batch_size=WORKER_BATCH))  # as a lida batch worker
    sample = [str(f) for f in files[:k]]
    att.finish([att.prepare(p) for p in sample[:16]])  # warm-up
    t = time.perf_counter()
    prepared = [att.prepare(p) for p in sample]
    t_prep = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, len(prepared), 16):
        att.finish(prepared[i : i + 16])
    t_fin = time.perf_counter() - t
    att.stores.close()
    return {"prepare_ms": 1000 * t_prep / len(sample), "finish_ms": 1000 * t_fin / len(sample)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--synthetic", action="store_true", help="synthesise 512x512 PNGs instead of using ../shared")
    ap.add_argument("--model", help="encoder (default: the bundled one)")
    ap.add_argument("--workers", type=int, default=None, help="lida batch --workers (default: its own default)")
    ap.add_argument(
        "--engines", nargs="+", default=["attribute", "local", "ray", "ray-cluster", "ray-warm"],
        choices=["attribute", "local", "ray", "ray-cluster", "ray-warm"],
        help="ray: lida batch starts (and stops) its own local Ray instance, as a one-off job does;"
        " ray-cluster: joins a Ray instance started beforehand with `ray start --head` (outside the"
        " timing), the first job on a new cluster; ray-warm: the same after a 16-file lida batch job on"
        " that instance (outside the timing), as on a cluster that has served a job before: Ray Data's"
        " detached helper actors (stats, autoscaling coordinator, actor locations) are up",
    )  # fmt: skip
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all the commands, alternating; each row is a command's median round")  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lida-batch-bench-"))
    try:
        corpus = make_corpus(tmp / "img", args.n, args.synthetic)
        files = sorted((tmp / "img").iterdir())
        for f in files:  # warm the page cache: every engine reads the same warm files
            f.read_bytes()
        env = dict(os.environ, LIDA_DEVICE="cpu")
        env.pop("LIDA_STORE", None)
        env["LIDA_STORE"] = str(tmp / "no-user-store.sqlite")  # the bundled default store only
        model = ["--model", args.model] if args.model else []
        workers = ["--workers", str(args.workers)] if args.workers else []
        lida = [sys.executable, "-m", "lida_plugin.cli"]

        def command(name: str, src: Path, out: Path) -> list[str]:
            if name == "attribute":
                return lida + ["attribute", "--jsonl", "-r", str(src)] + model
            cmd = lida + ["batch", str(src), "--out", str(out)] + model + workers
            if name != "local":
                cmd += ["--engine", "ray"] + (["--ray-address", "auto"] if name != "ray" else [])
            return cmd

        warm_src = tmp / "warm-up"
        warm_src.mkdir()
        for f in files[:16]:
            shutil.copyfile(f, warm_src / f.name)
        runs: dict[str, list[dict]] = {name: [] for name in args.engines}
        for rep in range(args.repeat):  # the commands alternate, so drift on a shared machine falls on all
            for name in args.engines:
                out = tmp / f"out-{name}-{rep}"  # a new DEST each time: a rerun would resume, not redo
                if name in ("ray-cluster", "ray-warm"):
                    start_ray_head(env, args.workers)
                load = os.getloadavg()[0]
                try:
                    if name == "ray-warm":  # a first, small job on the running instance, outside the timing
                        subprocess.run(command(name, warm_src, tmp / f"out-warm-up-{rep}"), env=env, check=True,
                                       capture_output=True)  # fmt: skip
                        load = os.getloadavg()[0]
                    secs, cpu, rc, err = timed(command(name, tmp / "img", out), env)
                finally:
                    if name in ("ray-cluster", "ray-warm"):
                        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop"], env=env,
                                       capture_output=True)  # fmt: skip
                shutil.rmtree(out, ignore_errors=True)
                if rc not in (0, 1):
                    print(f"{name}: exit {rc}\n{err}", file=sys.stderr)
                    return 1
                runs[name].append({"seconds": round(secs, 2), "images_per_s": round(args.n / secs, 1), "exit": rc,
                                   "cpu_s": round(cpu, 1), "cpu_pct": round(100 * cpu / secs), "load_before": load,
                                   "load_after": os.getloadavg()[0]})  # fmt: skip
        # each command's median run (by seconds), with every run's seconds next to it
        rows = {}
        for name, rs in runs.items():
            med = sorted(rs, key=lambda r: r["seconds"])[(len(rs) - 1) // 2]
            rows[name] = dict(med, all_seconds=[r["seconds"] for r in rs])
        costs = stage_costs(files, args.model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from lida_plugin.batch.local import default_workers

    cores = default_workers()
    print(f"# {corpus}; {cores} cores; {' '.join(sys.argv[1:]) or '(defaults)'}")
    if args.repeat > 1:
        print(f"# each row: the command's median of {args.repeat} alternating rounds; every round's seconds last")
    print(
        "| command | seconds | images/s | vs lida attribute | CPU s | CPU % of wall | CPU ms/img"
        " | load avg before/after |" + (" seconds, each round |" if args.repeat > 1 else "")
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|" + ("---|" if args.repeat > 1 else ""))
    base = rows.get("attribute", {}).get("images_per_s")
    label = {"attribute": "lida attribute (1 process)", "local": "lida batch (local engine)",
             "ray": "lida batch --engine ray (starts a local Ray)",
             "ray-cluster": "lida batch --engine ray --ray-address auto (a running Ray, its first job)",
             "ray-warm": "lida batch --engine ray --ray-address auto (a running Ray, after a job)"}  # fmt: skip
    for name, r in rows.items():
        rel = f"{r['images_per_s'] / base:.2f}x" if base else "-"
        print(f"| {label[name]} | {r['seconds']} | {r['images_per_s']} | {rel} | {r['cpu_s']} | {r['cpu_pct']} |"
              f" {1000 * r['cpu_s'] / args.n:.1f} | {r['load_before']:.2f} / {r['load_after']:.2f} |"
              + (f" {', '.join(str(x) for x in r['all_seconds'])} |" if args.repeat > 1 else ""))  # fmt: skip
    pairs = [("local", "attribute")] + [(n, "local") for n in ("ray", "ray-cluster", "ray-warm")]
    for name, ref in pairs:
        if name in rows and ref in rows:
            each = [b / a for a, b in zip(rows[name]["all_seconds"], rows[ref]["all_seconds"], strict=True)]
            rounds = f" (each round: {', '.join(f'{x:.2f}' for x in each)})" if args.repeat > 1 else ""
            print(f"\n{name} / {ref}: {rows[name]['images_per_s'] / rows[ref]['images_per_s']:.2f}{rounds}")
    per_img = costs["prepare_ms"] + costs["finish_ms"]
    bound = (
        "decode (read+decode+crops)" if costs["prepare_ms"] > costs["finish_ms"] else "inference (encoder+retrieval)"
    )
    print(
        f"\nper worker, one thread: prepare {costs['prepare_ms']:.2f} ms/img, finish {costs['finish_ms']:.2f} ms/img"
        f" -> {1000 / per_img:.1f} img/s per core; the larger stage: {bound}"
    )
    if args.json:
        args.json.write_text(json.dumps({"corpus": corpus, "cores": cores, "rows": rows, "stages": costs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
