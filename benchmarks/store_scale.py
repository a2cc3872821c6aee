"""How the exemplar store scales: bytes per exemplar, open time, query time and recall. Prints a table.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/store_scale.py --sizes 1e4 1e5 1e6 --work /tmp/store-scale

Synthetic embeddings shaped like real ones (D=128, unit rows): 300 family centres, 3,000
generators around them, exemplars around their generator (spread varying by generator). Queries:
100 fresh draws, 80 from registered generators and 20 from unseen generators of the same families.

For each size the store is written through :class:`~lida_plugin.store.ExemplarStore` (schema 2,
default ``keep=none``), its faiss index persisted with ``update_index``; a copy gets a usearch
index. Each row is then measured in its own subprocess (so the peak RSS is that row's own):

* **cold open s** / **open s**: ``StoreStack([ExemplarStore(path)])`` (exemplars, index, content keys)
  + ``Retriever(...)``, i.e. what ``lida attribute`` does before its first image with this store:
  first after ``posix_fadvise(DONTNEED)`` on the store and its vector cache (a cold-ish page cache;
  no effect when ``--work`` is on tmpfs), then again (warm). ``faiss`` opens through the vector cache
  (``<store>.lida-vectors``, written by ``update_index``); ``faiss-nocache`` opens the same store
  ignoring it (the blocks and the index read from SQLite); ``faiss-stack`` opens it together with a
  small second store (92 exemplars), as ``lida attribute`` opens a user store beside the bundled one.
* **top-10 ms**: one query's ten nearest exemplars (exact re-ranking included), mean of 100.
* **rank ms**: one query's ``Retriever.rank(top_k=5)`` (the generator ranking attribution uses).
* **recall@10**: overlap of the top-10 exemplars with the exact top-10.

Bytes per exemplar: the old schema (the bundled default store, real crops), and schema 2 with
``keep=none`` (the synthetic store, index and vector cache included). ``--reuse`` keeps each size's
stores in ``--work`` and reuses them on the next run (the write column is then the first run's).
With ``--images DIR`` also ``keep=lowbits`` and ``keep=raw`` registered from real PNGs through the
bundled encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D = 128


def synth(n: int, seed: int = 0, gens: int = 3000, fams: int = 300, queries: int = 100):
    """``(embeddings [n, D], generator labels [n], queries [q, D])``."""
    rng = np.random.default_rng(seed)
    gens, fams = min(gens, max(1, n // 3)), min(fams, gens)
    f = rng.standard_normal((fams, D), dtype=np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    g = f[rng.integers(0, fams, 2 * gens)] + 0.8 * rng.standard_normal((2 * gens, D), dtype=np.float32) / np.sqrt(D)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    spread = rng.uniform(0.5, 1.2, 2 * gens).astype(np.float32)

    def draw(lab, r):
        x = np.empty((len(lab), D), np.float32)
        for o in range(0, len(lab), 100_000):
            lb = lab[o : o + 100_000]
            y = g[lb] + spread[lb, None] * r.standard_normal((len(lb), D), dtype=np.float32) / np.sqrt(D)
            x[o : o + len(lb)] = y / np.linalg.norm(y, axis=1, keepdims=True)
        return x

    lab = rng.integers(0, gens, n)
    x = draw(lab, rng)
    qr = np.random.default_rng(seed + 1)
    qlab = np.concatenate([qr.integers(0, gens, queries - queries // 5), qr.integers(gens, 2 * gens, queries // 5)])
    return x, lab, draw(qlab, qr)


class FakeInfo:
    def __init__(self) -> None:
        self.model_id, self.crop_size, self.crop_count, self.crop_align = "synthetic-d128", 64, 16, 8
        self.embedding_dim, self.input_resize, self.fingerprint_mode = D, 0, "scaled"


class FakeEncoder:
    info = FakeInfo()
    model_id = info.model_id


def build_store(path: Path, x: np.ndarray, lab: np.ndarray) -> None:
    from lida_plugin.store import ExemplarStore, _Row

    with ExemplarStore(path, create=True) as s:
        s._writable()
        with s.conn:
            s._bind_model(FakeEncoder)
            s.conn.executemany(
                "INSERT INTO generators (name, family, added) VALUES (?, ?, '2026-01-01')",
                [(f"gen-{i:04d}", f"fam-{i % 300:03d}") for i in np.unique(lab)],
            )
        for o in range(0, len(x), 50_000):
            rows = [
                _Row(f"{i:064x}", f"gen-{lab[i]:04d}", f"img-{i:07d}.png", 512, 512, x[i].tobytes(), None)
                for i in range(o, min(len(x), o + 50_000))
            ]
            with s.conn:
                s._lock()
                s._insert_rows(rows, FakeEncoder.model_id)
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def drop_from_page_cache(path: str) -> None:
    """Ask the kernel to drop the store's (and its vector cache's) pages: a cold-ish open. No effect on
    tmpfs (``/dev/shm``), where the files are memory."""
    for p in (path, path + "-wal", path + ".lida-vectors"):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def open_store(path: str, use_cache: bool, beside: str | None = None):
    """What ``lida attribute`` does before its first image: the store stack (exemplars, index, content
    keys) and the retriever; ``beside``: a second, small store searched with it (as the bundled one is)."""
    from lida_plugin import vectorcache
    from lida_plugin.retrieve import Retriever
    from lida_plugin.store import ExemplarStore, StoreStack

    if not use_cache:
        vectorcache.load = lambda *a, **k: None
    stores = [ExemplarStore(path, readonly=True)] + ([ExemplarStore(beside, readonly=True)] if beside else [])
    stack = StoreStack(stores, FakeEncoder)
    return stack, Retriever(stack.exemplars)


def small_store(work: Path) -> str:
    """92 exemplars of 30 generators far from the big store's (a stand-in for the bundled default store)."""
    path = work / "small.sqlite"
    if not path.exists():
        x, lab, _ = synth(92, seed=99, gens=30, fams=30)
        build_store(path, x, lab + 10_000)
    return str(path)


def measure(path: str, backend: str, work: str) -> dict:
    """One row, in its own process."""
    q = np.load(Path(work) / "queries.npy")
    gt = np.load(Path(work) / "gt.npy")
    beside = small_store(Path(work)) if backend.endswith("stack") else None
    drop_from_page_cache(path)
    t = time.perf_counter()
    stack, retr = open_store(path, use_cache=not backend.endswith("nocache"), beside=beside)
    cold_s = time.perf_counter() - t
    stack.close()
    del stack, retr
    t = time.perf_counter()
    stack, retr = open_store(path, use_cache=not backend.endswith("nocache"), beside=beside)
    open_s = time.perf_counter() - t
    ex = stack.exemplars
    if backend != "numpy":
        assert ex.segments and ex.segments[0].ann.kind.startswith(backend.split("-")[0]), (backend, ex.segments)
    got, dt = [], []
    for qi in q:
        t = time.perf_counter()
        _, ids = retr.index.search(qi[None, :], 10)
        dt.append(time.perf_counter() - t)
        got.append(ids[0])
    rank = []
    for qi in q:
        t = time.perf_counter()
        retr.rank(qi[None, :], top_k=5)
        rank.append(time.perf_counter() - t)
    recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(got, gt, strict=True)]))
    return {
        "cold_open_s": cold_s,
        "open_s": open_s,
        "top10_ms": 1000 * float(np.mean(dt)),
        "rank_ms": 1000 * float(np.mean(rank)),
        "recall": recall,
        "rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def crops_bytes(images: Path, work: Path) -> dict[str, float]:
    """Bytes per exemplar for keep=none/lowbits/raw, registering real PNGs with the bundled encoder."""
    from lida_plugin.decode import decode_file
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import ExemplarStore

    enc = Encoder(Path(__file__).resolve().parents[1] / "lida_plugin/data/encoder.onnx", device="cpu", threads=1)
    paths = sorted(images.rglob("*.png"))[:40]
    out = {}
    for keep in ("none", "lowbits", "raw"):
        p = work / f"real-{keep}.sqlite"
        with ExemplarStore(p, create=True, keep=keep) as s:
            for f in paths:
                s.register(enc, decode_file(f), "g")
            s.compact()
        out[keep] = p.stat().st_size / len(paths)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    ap.add_argument("--work", default="/tmp/store-scale")
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["numpy", "faiss", "usearch"],
        help="numpy, faiss, usearch; faiss-nocache: the faiss store opened without its vector cache;"
        " faiss-stack: the faiss store searched together with a small second store (as beside the bundled"
        " default store; recall against the big store's exact neighbours, which the small one's far-away"
        " exemplars do not displace)",
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep each size's stores in --work and reuse them on the next run (skips the write)",
    )
    ap.add_argument("--images", type=Path, help="real PNGs for the keep=lowbits/raw sizes (e.g. ../shared/data)")
    ap.add_argument("--measure", nargs=3, metavar=("STORE", "BACKEND", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    from lida_plugin.store import ExemplarStore, bundled_store_path

    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    old = bundled_store_path()
    with ExemplarStore(old, immutable=True) as s:
        old_bpe = old.stat().st_size / s.exemplar_count()
    print(f"bytes/exemplar, old schema (bundled default store, low-bit crops inline): {old_bpe:,.0f}", flush=True)
    if args.images:
        for keep, b in crops_bytes(args.images, root).items():
            print(f"bytes/exemplar, schema 2, keep={keep} (real PNGs, bundled encoder): {b:,.0f}", flush=True)
    rows = []
    for size in args.sizes:
        n = int(size)
        work = root / f"n{n}"
        path = work / "store.sqlite"
        built = work / "built.json"
        if args.reuse and built.exists():  # the same synthetic store, written by an earlier run
            write_s = json.loads(built.read_text())["write_s"]
            print(f"n={n}: reusing {path} (written in {write_s:.1f} s)", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            t = time.perf_counter()
            x, lab, q = synth(n)
            build_store(path, x, lab)
            write_s = time.perf_counter() - t
            gt = np.stack([np.argsort(-(x @ qi), kind="stable")[:10] for qi in q])
            np.save(work / "queries.npy", q)
            np.save(work / "gt.npy", gt)
            del x
            built.write_text(json.dumps({"n": n, "write_s": write_s}))
        bpe = path.stat().st_size / n
        builds = {}
        for backend in args.backends:
            if backend == "numpy" or backend.endswith(("nocache", "stack")):
                continue
            kind = {"faiss": "faiss-ivf-sq8", "usearch": "usearch-hnsw-i8"}[backend]
            bpath = work / f"store-{backend}.sqlite"
            if not (args.reuse and bpath.exists()):
                shutil.copy(path, bpath)
            t = time.perf_counter()
            with ExemplarStore(bpath) as s:
                s.update_index(kind, min_rows=0)
                s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cache = bpath.with_name(bpath.name + ".lida-vectors")  # the vector cache counts: it is on disk too
            size = bpath.stat().st_size + (cache.stat().st_size if cache.exists() else 0)
            builds[backend] = (time.perf_counter() - t, size / n)
            print(f"n={n}: {backend} index built in {builds[backend][0]:.1f} s", flush=True)
        for backend in args.backends:
            spath = path if backend == "numpy" else work / f"store-{backend.split('-')[0]}.sqlite"
            cmd = [sys.executable, __file__, "--measure", str(spath), backend, str(work)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            build_s, b = builds.get(backend.split("-")[0], (0.0, bpe))
            rows.append((n, backend, b, write_s, build_s, res))
            print(f"n={n} {backend}: {res}", flush=True)
        if not args.reuse:
            shutil.rmtree(work, ignore_errors=True)
    print()
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"threads: OMP_NUM_THREADS={threads}; old schema {old_bpe:,.0f} B/exemplar")
    print("| exemplars | search | bytes/exemplar (keep=none) | write s | index build s | cold open s | open s "
          "| top-10 ms | rank ms | recall@10 | peak RSS MB |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, backend, b, write_s, build_s, r in rows:
        print(f"| {n:,} | {backend} | {b:,.0f} | {write_s:.1f} | {build_s:.1f} | {r['cold_open_s']:.3f} | "
              f"{r['open_s']:.3f} | "
              f"{r['top10_ms']:.2f} | {r['rank_ms']:.2f} | {r['recall']:.3f} | {r['rss_mb']:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
