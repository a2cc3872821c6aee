#!/usr/bin/env python
"""Soak test of ``lida watch``, black-box: the real command as a subprocess, SIGKILLed and restarted.

    nice -n 19 python benchmarks/watch_soak.py --files 5000 --minutes 30 --kills 3 [--model M] [--json out.json]

Files arrive at a steady rate over ``--minutes`` from several writer threads, each file by one of:

* ``copy``: written in one go; ``rename``: written beside the folder, renamed in;
* ``slow``: one open, chunks with pauses, one close; ``reopen``: open-append-close per chunk, with
  pauses longer than the close-settle time and shorter than the settle time (network copies);
* ``deleted``: a slow write removed before it finishes (must not be reported, nor count as lost);
* ``duplicate``: the bytes of an earlier file under a new name; ``bad``: truncated or random bytes.

``--kills`` SIGKILLs hit at random moments while files arrive; the watcher is restarted at once
(files keep arriving while it is down). After the last file, the script waits until every file
has its report and the journal is quiet, then stops the watcher with SIGTERM and checks:

* **lost** (must be 0): a file that was not deleted without a report describing its final bytes (an
  ``ok`` report with their sha256, or an ``error`` report for a bad file);
* **doubled** (must be 0): a journal row processed more than once, or a file with more than one
  journal row (its bytes never changed once written: a second row means a partial file was analysed);
* files in, reports out, quarantined, duplicates; the watcher's RSS over time (sampled from /proc).

Exit status 0 when lost = doubled = 0. ``--json PATH`` writes the result.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOWS = ("copy", "rename", "slow", "reopen", "deleted", "duplicate", "bad")
WEIGHTS = (30, 20, 10, 15, 5, 10, 10)


def make_png(rng: random.Random, size: int) -> bytes:
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(rng.randrange(1 << 30))
    buf = io.BytesIO()
    Image.fromarray(g.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.inbox, self.out, self.quar = work / "in", work / "out", work / "quarantine"
        self.staging, self.log = work / "staging", work / "watch.log"
        for d in (self.inbox, self.staging):
            d.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(args.seed)
        self.final: dict[str, bytes] = {}  # name -> final bytes (files that stay)
        self.bad: set[str] = set()
        self.deleted: set[str] = set()
        self.hows: dict[str, str] = {}
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.rss: list[tuple[float, int, float]] = []  # (seconds, run number, MiB)
        self.runs = 0
        self.t0 = time.monotonic()

    # -- the watcher ------------------------------------------------------------------------------------
    def start(self) -> None:
        a = self.args
        cmd = [sys.executable, "-m", "lida_plugin.cli", "watch", str(self.inbox), "--out", str(self.out),
               "--quarantine", str(self.quar), "--workers", "2", "--settle", str(a.settle), "--rescan",
               str(a.rescan), "--stats-interval", "10", "--log-json", "--no-default-store"]  # fmt: skip
        if a.model:
            cmd += ["--model", a.model]
        env = dict(os.environ, LIDA_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env["LIDA_STORE"] = str(self.work / "store.sqlite")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        self.runs += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def sample(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            mb = rss_mb(self.proc.pid)
            if mb is not None:
                self.rss.append((round(time.monotonic() - self.t0, 1), self.runs, round(mb, 1)))

    # -- writers ----------------------------------------------------------------------------------------------
    def plan(self) -> list[tuple[str, str, bytes]]:
        out, originals = [], []
        for i in range(self.args.files):
            how = self.rng.choices(HOWS, WEIGHTS)[0]
            if how == "duplicate" and not originals:
                how = "copy"
            name = f"{how}-{i:06d}.png"
            if how == "duplicate":
                data = self.rng.choice(originals)
            elif how == "bad":
                good = make_png(self.rng, self.args.size)
                data = [
                    good[: len(good) // 3],
                    b"\x89PNG\r\n\x1a\n" + self.rng.randbytes(300),
                    self.rng.randbytes(700),
                ][i % 3]
            else:
                data = make_png(self.rng, self.args.size)
                if how != "deleted":
                    originals.append(data)
            out.append((name, how, data))
        return out

    def write(self, name: str, how: str, data: bytes) -> None:
        path = self.inbox / name
        chunks = [data[i : i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
        pause = self.args.settle * 0.4  # longer than the close-settle time (0.1 s), shorter than the settle time
        if how in ("copy", "duplicate", "bad"):
            path.write_bytes(data)
        elif how == "rename":
            tmp = self.staging / name
            tmp.write_bytes(data)
            os.rename(tmp, path)
        elif how == "slow":
            with open(path, "wb") as f:
                for c in chunks:
                    f.write(c)
                    f.flush()
                    time.sleep(pause)
        elif how == "reopen":
            for c in chunks:
                with open(path, "ab") as f:
                    f.write(c)
                time.sleep(pause)
        elif how == "deleted":
            with open(path, "wb") as f:
                f.write(chunks[0])
                f.flush()
                time.sleep(pause / 2)
            path.unlink()
        with self.lock:
            self.hows[name] = how
            if how == "deleted":
                self.deleted.add(name)
            else:
                self.final[name] = data
                if how == "bad":
                    self.bad.add(name)

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        plan = self.plan()
        duration = a.minutes * 60
        kill_at = sorted(self.rng.uniform(0.1, 0.9) * duration for _ in range(a.kills))
        self.start()
        self.wait_ready(1)
        t_start = time.monotonic()
        stop_sampler = threading.Event()

        def sampler() -> None:
            while not stop_sampler.wait(a.rss_every):
                self.sample()

        threading.Thread(target=sampler, daemon=True).start()
        kills_done = 0
        with ThreadPoolExecutor(a.writers) as pool:
            futures = []
            for i, (name, how, data) in enumerate(plan):
                due = t_start + duration * i / max(1, len(plan))
                while time.monotonic() < due:
                    time.sleep(min(0.05, max(0.0, due - time.monotonic())))
                if kills_done < len(kill_at) and time.monotonic() - t_start >= kill_at[kills_done]:
                    self.kill()
                    kills_done += 1
                    print(f"[{time.monotonic() - self.t0:.0f}s] SIGKILL {kills_done}, {i} files dropped", flush=True)
                    self.start()
                futures.append(pool.submit(self.write, name, how, data))
            for f in futures:
                f.result()
        while kills_done < len(kill_at):  # a kill scheduled late in the window
            self.kill()
            kills_done += 1
            self.start()
        print(f"[{time.monotonic() - self.t0:.0f}s] all {len(plan)} files written; waiting for the reports", flush=True)
        finished = self.wait_done(a.drain_timeout)
        self.sample()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(120)
        stop_sampler.set()
        return self.check(kills_done, rc, finished)

    def wait_ready(self, n: int) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"lida watch exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.log.exists() and self.log.read_text().count('"initial": true') >= n:
                return
            time.sleep(0.1)
        raise SystemExit("lida watch did not start")

    def wait_done(self, timeout: float) -> bool:
        want = {f"{n}.json" for n in self.final}
        deadline = time.monotonic() + timeout
        quiet_since, last = time.monotonic(), -1
        while time.monotonic() < deadline:
            have = {p.name for p in self.out.glob("*.json")} if self.out.exists() else set()
            n = self._journal_rows()
            if n != last:
                quiet_since, last = time.monotonic(), n
            if want <= have and time.monotonic() - quiet_since > max(3.0, 3 * self.args.settle):
                return True
            time.sleep(0.5)
        return False

    def _journal_rows(self) -> int:
        try:
            with sqlite3.connect(f"file:{self.out / '.lida-watch.sqlite'}?mode=ro", uri=True, timeout=5) as db:
                return db.execute("SELECT COUNT(*) FROM assets").fetchone()[0]
        except sqlite3.Error:
            return -1

    def check(self, kills: int, rc: int, finished: bool) -> dict:
        lost, wrong = [], []
        duplicates = 0
        for name, data in sorted(self.final.items()):
            rp = self.out / f"{name}.json"
            try:
                rec = json.loads(rp.read_text())
            except (OSError, ValueError):
                lost.append(name)
                continue
            if name in self.bad:
                if rec.get("status") != "error":
                    wrong.append(name)
            elif (
                rec.get("status") != "ok" or (rec.get("image") or {}).get("sha256") != hashlib.sha256(data).hexdigest()
            ):
                wrong.append(name)
            duplicates += "duplicate_of" in rec
        with sqlite3.connect(self.out / ".lida-watch.sqlite") as db:
            rows = db.execute("SELECT path, processed FROM assets").fetchall()
        per_path: dict[str, int] = {}
        for path, _ in rows:
            per_path[path] = per_path.get(path, 0) + 1
        doubled = sorted({p for p, n in rows if n > 1} | {p for p, c in per_path.items() if c > 1})
        deleted_reported = sum((self.out / f"{n}.json").exists() for n in self.deleted)
        quarantined = len(list(self.quar.glob("*.error.json"))) if self.quar.exists() else 0
        by_run: dict[int, list[float]] = {}
        for _, run, mb in self.rss:
            by_run.setdefault(run, []).append(mb)
        longest = max(by_run.values(), key=len) if by_run else []
        warm = longest[len(longest) // 4 :]  # past start-up (model load, first batches)
        half = max(1, len(warm) // 2)
        result = {
            "files_in": len(self.final),
            "deleted_before_done": len(self.deleted),
            "reports_out": sum((self.out / f"{n}.json").exists() for n in self.final),
            "quarantined": quarantined,
            "bad_files": len(self.bad),
            "duplicates": duplicates,
            "lost": len(lost) + len(wrong),
            "lost_files": (lost + wrong)[:20],
            "doubled": len(doubled),
            "doubled_files": doubled[:20],
            "deleted_but_reported": deleted_reported,
            "kills": kills,
            "watcher_runs": self.runs,
            "final_exit_code": rc,
            "drained": finished,
            "by_writer": {h: sum(1 for v in self.hows.values() if v == h) for h in HOWS},
            "rss_mib": {
                "samples": len(self.rss),
                "max": max((m for _, _, m in self.rss), default=None),
                "longest_run_warm_first_half_median": _median(warm[:half]),
                "longest_run_warm_second_half_median": _median(warm[half:]),
                "series": self.rss[:: max(1, len(self.rss) // 40)],
            },
            "seconds": round(time.monotonic() - self.t0, 1),
        }
        return result


def _median(xs: list[float]) -> float | None:
    return sorted(xs)[len(xs) // 2] if xs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=5.0, help="files arrive at a steady rate over this long")
    ap.add_argument("--kills", type=int, default=3, help="SIGKILL + restart at random moments")
    ap.add_argument("--model", help="encoder ONNX (default: the bundled one)")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--writers", type=int, default=6, help="writer threads")
    ap.add_argument("--settle", type=float, default=1.0, help="lida watch --settle")
    ap.add_argument("--rescan", type=float, default=10.0, help="lida watch --rescan")
    ap.add_argument("--rss-every", type=float, default=2.0, help="seconds between RSS samples")
    ap.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the last reports")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, help="keep everything here (default: a temp folder, removed)")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lida-soak-") as tmp:
        work = args.workdir or Path(tmp)
        soak = Soak(args, work)
        try:
            result = soak.run()
        finally:
            if soak.proc is not None and soak.proc.poll() is None:
                soak.proc.kill()
                soak.proc.wait()
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["lost"] == 0 and result["doubled"] == 0 and result["drained"] else 1


if __name__ == "__main__":
    sys.exit(main())
