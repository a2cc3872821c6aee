#!/usr/bin/env python
"""Cold start of one-file ``lida attribute`` against a bare Python start, in one run.

    python benchmarks/cold_start.py [--runs 15] [--size 512] [--model M]

Prints a Markdown table: the median (and min/max) wall time of N fresh processes for

* ``python -c pass``: the interpreter alone;
* ``python -c "import lida_plugin.cli"``: what importing the CLI costs (every subcommand's modules);
* ``lida attribute x.png`` (as ``python -m lida_plugin.cli``): one asset end to end (the bundled model
  and default store unless ``--model``/``--store`` are given), what a host running one process per
  asset pays;
* ``lida serve``, per asset: the warm mode (one process, a path per stdin line, a JSON record per
  stdout line), timed per request after the process is up: what the same host pays per asset if it
  keeps one ``lida serve`` running.

The three commands are interleaved run by run, so load on the machine affects them alike. The
image is a lossless PNG with random low bits, made by the script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):  # 1: the file was analysed but is an error record; still a full run
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return dt


def _serve_times(img: Path, args: argparse.Namespace, env: dict[str, str]) -> list[float]:
    """Per-request wall times of one ``lida serve`` process (the first request, which loads the model, not counted)."""
    cmd = [sys.executable, "-m", "lida_plugin.cli", "serve"] + (["--model", args.model] if args.model else [])
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                         text=True)  # fmt: skip
    out = []
    try:
        for i in range(args.runs + 1):
            t = time.perf_counter()
            p.stdin.write(f"{img}\n")
            p.stdin.flush()
            if not p.stdout.readline():
                raise SystemExit("lida serve ended early")
            if i:
                out.append(time.perf_counter() - t)
        p.stdin.close()
        p.wait(timeout=60)
    finally:
        p.kill()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="processes per command (median reported)")
    ap.add_argument("--size", type=int, default=512, help="side of the test image in pixels")
    ap.add_argument("--model", help="encoder ONNX (default: the bundled one)")
    ap.add_argument("--store", help="user store (default: a fresh empty one in a temp folder)")
    ap.add_argument("--threads", type=int, default=1, help="encoder threads (LIDA_THREADS)")
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        img = Path(d) / "x.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(img)
        env = dict(os.environ, LIDA_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
        env["LIDA_STORE"] = args.store or str(Path(d) / "store.sqlite")
        attribute = [sys.executable, "-m", "lida_plugin.cli", "attribute", str(img)]
        if args.model:
            attribute += ["--model", args.model]
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import lida_plugin.cli"': [sys.executable, "-c", "import lida_plugin.cli"],
            "lida attribute x.png (one file)": attribute,
        }
        for cmd in rows.values():  # warm the page cache and .pyc files; not counted
            _timed(cmd, env)
        times: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.runs):
            for k, cmd in rows.items():
                times[k].append(_timed(cmd, env))
        times["lida serve, per asset (warm)"] = _serve_times(img, args, env)
    base = statistics.median(times["python -c pass"])
    print(f"{args.runs} runs each, interleaved; {args.size}x{args.size} PNG; {args.threads} encoder thread(s)")
    print(f"python {sys.version.split()[0]} at {sys.executable}\n")
    print("| command | median ms | min ms | max ms | x python -c pass |")
    print("|---|---:|---:|---:|---:|")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"| `{k}` | {med * 1e3:.0f} | {min(ts) * 1e3:.0f} | {max(ts) * 1e3:.0f} | {med / base:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
