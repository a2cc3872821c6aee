"""``lida watch`` on real folders with the real watchdog observer (no mocks).

In-process tests drive :class:`lida_plugin.watch.Watcher` directly; the kill-and-restart test
runs ``python -m lida_plugin.cli watch`` as a subprocess, SIGKILLs it midway and restarts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import jsonschema
import pytest
from conftest import synthetic_pixels, write_png
from leakcheck import no_thread_leaks  # noqa: F401  (autouse)
from PIL import Image

from lida_plugin.watch import WatchConfig, Watcher, is_candidate

SCHEMA = json.loads((Path(__file__).parent.parent / "lida_plugin/schemas/attribution-result.schema.json").read_text())


def png_bytes(kind: str, seed: int) -> bytes:
    buf = BytesIO()
    Image.fromarray(synthetic_pixels(kind, seed)).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(cond, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


class Recorder:
    """A host plugin that records every ``lida_asset_done`` call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    from lida_plugin import hookimpl

    @hookimpl
    def lida_asset_done(self, path, record, outputs):
        with self.lock:
            self.calls.append({"path": path, "record": record, "outputs": outputs})


@pytest.fixture
def pm():
    from lida_plugin.manager import new_plugin_manager

    pm = new_plugin_manager(load_entrypoints=False)
    rec = Recorder()
    pm.register(rec, name="recorder")
    pm.recorder = rec
    return pm


def test_candidate_names():
    for ok in ("a.png", "B.JPG", "x.y.webp", "photo.tiff"):
        assert is_candidate(ok), ok
    for bad in (".a.png", "~a.png", "a.png.part", "a.tmp", "a.png.crdownload", "a.json", "a", "a.png.swp"):
        assert not is_candidate(bad), bad


def test_watch_in_process(tmp_path, attributor, pm):
    """Initial scan, events, temp names, rename-in, slow writes, duplicates, a bad file, clean stop."""
    inbox, out, quar = tmp_path / "in", tmp_path / "out", tmp_path / "quarantine"
    inbox.mkdir()
    write_png(inbox / "before-start.png", "gen-a", 1)  # present before the watcher starts
    cfg = WatchConfig(in_dir=inbox, out_dir=out, quarantine=quar, settle=0.3, rescan=1.0, stats_interval=0.5)
    with Watcher(cfg, attributor, pm=pm) as w:
        write_png(inbox / "a.png", "gen-b", 2)
        (inbox / "dup-of-a.png").write_bytes((inbox / "a.png").read_bytes())
        write_png(tmp_path / "staging.png", "real", 3)
        os.rename(tmp_path / "staging.png", inbox / "renamed.png")
        (inbox / "partial.png.part").write_bytes(png_bytes("gen-a", 4))  # ignored
        (inbox / ".hidden.png").write_bytes(png_bytes("gen-a", 5))  # ignored
        (inbox / "broken.png").write_bytes(png_bytes("gen-a", 6)[:300])
        data = png_bytes("gen-d", 7)
        with open(inbox / "slow.png", "wb") as f:  # written in chunks with pauses longer than a tick
            for i in range(0, len(data), len(data) // 4 + 1):
                f.write(data[i : i + len(data) // 4 + 1])
                f.flush()
                time.sleep(0.15)
        names = ["before-start.png", "a.png", "dup-of-a.png", "renamed.png", "broken.png", "slow.png"]
        assert wait_for(lambda: all((out / f"{n}.json").exists() for n in names) and w.idle())
        w.request_rescan()  # a rescan finds nothing new: everything is journaled
        time.sleep(0.3)
    reports = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(reports) == {f"{n}.json" for n in names}
    for name, rec in reports.items():
        jsonschema.validate(rec, SCHEMA)
        assert rec["path"] == str(inbox / name[: -len(".json")])
    assert reports["broken.png.json"]["status"] == "error"
    assert "corrupt" in reports["broken.png.json"]["error"] or "truncated" in reports["broken.png.json"]["error"]
    pair = [reports["a.png.json"], reports["dup-of-a.png.json"]]  # whichever came second is the duplicate
    assert sorted(r.get("duplicate_of", "") for r in pair) == [
        "",
        pair[0]["path"] if "duplicate_of" in pair[1] else pair[1]["path"],
    ]
    assert pair[0]["image"]["sha256"] == pair[1]["image"]["sha256"]
    assert reports["slow.png.json"]["status"] == "ok"
    assert reports["slow.png.json"]["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (quar / "broken.png").read_bytes() == (inbox / "broken.png").read_bytes()  # a copy; original stays
    err = json.loads((quar / "broken.png.error.json").read_text())
    assert err["error"] == reports["broken.png.json"]["error"]
    calls = pm.recorder.calls
    assert sorted(c["path"] for c in calls) == sorted(str(inbox / n) for n in names)  # once each
    assert all(c["outputs"]["report"].endswith(".json") for c in calls)
    with sqlite3.connect(cfg.journal) as db:
        assert db.execute("SELECT COUNT(*), MAX(processed), MIN(notified) FROM assets").fetchone() == (6, 1, 1)
    assert not list(out.glob(".lida-tmp-*"))


def test_restart_skips_done_and_moves_processed(tmp_path, attributor, pm):
    """A second start re-analyses nothing; --move-processed moves good files, bad ones go to quarantine."""
    inbox, out, done, quar = tmp_path / "in", tmp_path / "out", tmp_path / "done", tmp_path / "q"
    inbox.mkdir()
    for i in range(4):
        write_png(inbox / f"img{i}.png", "gen-a", 10 + i)
    cfg = WatchConfig(in_dir=inbox, out_dir=out, settle=0.2)
    with Watcher(cfg, attributor, pm=pm) as w:
        assert wait_for(lambda: len(list(out.glob("*.json"))) == 4 and w.idle())
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    (inbox / "bad.png").write_bytes(b"not an image at all")
    cfg2 = WatchConfig(in_dir=inbox, out_dir=out, settle=0.2, move_processed=done, quarantine=quar)
    with Watcher(cfg2, attributor, pm=pm) as w:
        assert wait_for(lambda: (quar / "bad.png.error.json").exists() and w.idle())
        # the four journaled files are moved by the initial scan without being analysed again
        assert wait_for(lambda: len(list(done.glob("*.png"))) == 4)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("img*.json")} == mtimes
    assert not (inbox / "bad.png").exists() and (quar / "bad.png").exists()
    assert sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) == []
    assert len(pm.recorder.calls) == 5


def test_moved_originals_and_quarantined_files_are_never_replaced(tmp_path, attributor, pm):
    """Two uploads of image.png (and two bad t.png) with --move-processed: the moved file is the user's only
    copy, so the second one gets image.1.png (t.1.png) instead of replacing the first."""
    inbox, out, done, quar = tmp_path / "in", tmp_path / "out", tmp_path / "done", tmp_path / "q"
    inbox.mkdir()
    done.mkdir()
    (done / "image.png").write_bytes(b"someone's file already there")
    cfg = WatchConfig(in_dir=inbox, out_dir=out, settle=0.2, move_processed=done, quarantine=quar)
    firsts = {}
    with Watcher(cfg, attributor, pm=pm) as w:
        for i, seed in enumerate((21, 22)):
            staged = write_png(tmp_path / f"staging{i}" / "image.png", "gen-a", seed)
            firsts[i] = Path(staged).read_bytes()
            Path(staged).rename(inbox / "image.png")  # arrives whole, as an upload's final rename
            (inbox / "t.png").write_bytes(b"bad bytes %d" % i)
            assert wait_for(lambda: not (inbox / "image.png").exists() and not (inbox / "t.png").exists() and w.idle())
    assert (done / "image.png").read_bytes() == b"someone's file already there"
    assert (done / "image.1.png").read_bytes() == firsts[0] and (done / "image.2.png").read_bytes() == firsts[1]
    assert (quar / "t.png").read_bytes() == b"bad bytes 0" and (quar / "t.1.png").read_bytes() == b"bad bytes 1"
    assert json.loads((quar / "t.1.png.error.json").read_text())["quarantined_as"] == str(quar / "t.1.png")


def test_watch_command_refuses_manifest_without_out(tmp_path, isolated_env):
    from lida_plugin.cli import main

    (tmp_path / "in").mkdir()
    assert main(["watch", str(tmp_path / "in"), "--manifest", "sidecar", "--no-default-store"]) == 2
    assert main(["watch", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--no-default-store"]) == 3


# -- the kill-and-restart test ----------------------------------------------------------------
def _start(inbox: Path, out: Path, quar: Path, log: Path, keys: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lida_plugin.cli", "watch", str(inbox), "--out", str(out), "--quarantine", str(quar),
           "--workers", "2", "--settle", "0.5", "--rescan", "2", "--stats-interval", "1", "--log-json",
           "--no-default-store", "--manifest", "sidecar", "--keys", str(keys)]  # fmt: skip
    env = dict(os.environ, LIDA_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env=env)  # noqa: SIM115


def _log_events(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _wait_ready(proc: subprocess.Popen, log: Path, n: int) -> None:
    ok = wait_for(lambda: sum(e.get("event") == "scan" and e.get("initial") for e in _log_events(log)) >= n, 60)
    assert ok and proc.poll() is None, log.read_text()[-3000:]


@pytest.mark.slow
def test_kill_and_restart_200_files(tmp_path, isolated_env):
    """200 files dropped concurrently (slow writers, renames, corrupt files, duplicates, temp names);
    SIGKILL midway, more files while it is down, restart: one report and one valid signed sidecar
    manifest per file, nothing twice, no torn or temporary file left."""
    from lida_plugin.keys import init_keys
    from lida_plugin.verify import verify

    inbox, out, quar, log = tmp_path / "in", tmp_path / "out", tmp_path / "q", tmp_path / "watch.log"
    keys = init_keys(tmp_path / "keys")
    inbox.mkdir()
    rng = random.Random(7)
    valid: dict[str, bytes] = {}
    corrupt: dict[str, bytes] = {}
    plan = []  # (name, bytes, how)
    for i in range(150):
        kind = ("gen-a", "gen-b", "gen-c", "real")[i % 4]
        plan.append(
            (
                f"v{i:03d}.png",
                png_bytes(kind, 5000 + i),
                "slow" if i % 10 == 0 else ("rename" if i % 7 == 0 else "write"),
            )
        )
    for i in range(25):  # duplicates of earlier files under other names
        src = plan[rng.randrange(150)]
        plan.append((f"dup{i:02d}.png", src[1], "write"))
    for i in range(25):
        good = png_bytes("gen-a", 9000 + i)
        bad = [good[: len(good) // 3], b"\x89PNG\r\n\x1a\n" + os.urandom(200), os.urandom(500), b""][i % 4]
        plan.append((f"bad{i:02d}.png", bad, "write"))
    for name, data, _ in plan:
        (corrupt if name.startswith("bad") else valid)[name] = data
    rng.shuffle(plan)
    first, second = plan[:140], plan[140:]
    staging = tmp_path / "staging"
    staging.mkdir()

    def drop(item) -> None:
        name, data, how = item
        if how == "rename":
            (staging / name).write_bytes(data)
            os.rename(staging / name, inbox / name)
        elif how == "slow":
            with open(inbox / name, "wb") as f:
                step = max(1, len(data) // 5)
                for i in range(0, len(data), step):
                    f.write(data[i : i + step])
                    f.flush()
                    time.sleep(0.25)
        else:
            (inbox / name).write_bytes(data)

    proc = _start(inbox, out, quar, log, keys)
    try:
        _wait_ready(proc, log, 1)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(drop, item) for item in first]
            # ignored names: never analysed, never reported
            (inbox / "upload.png.part").write_bytes(valid["v001.png"])
            (inbox / ".DS_Store").write_bytes(b"x")
            (inbox / "~lock.png").write_bytes(valid["v002.png"])
            assert wait_for(lambda: len(list(out.glob("*.json"))) >= 40, 60)
            proc.send_signal(signal.SIGKILL)  # midway: files in flight, slow writers still writing
            proc.wait(10)
            killed_reports = {
                p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_text()) for p in out.glob("*.json")
            }
            assert len(killed_reports) < len(first) - 20, "the watcher was not killed midway"
            for f in futures:
                f.result()
            list(pool.map(drop, second))  # arrive while it is down: found by the initial scan
        proc = _start(inbox, out, quar, log, keys)
        _wait_ready(proc, log, 2)
        expected = {f"{n}.json" for n in valid} | {f"{n}.json" for n in corrupt}
        assert wait_for(lambda: {p.name for p in out.glob("*.json")} >= expected, 90), log.read_text()[-3000:]
        assert wait_for(lambda: len(list(quar.glob("*.error.json"))) == len(corrupt), 30)
        time.sleep(2.5)  # one more rescan: must find nothing to do
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    reports = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(reports) == expected  # nothing missing, nothing extra (no temp names, no torn files)
    assert not [p for p in out.iterdir() if "lida-tmp-" in p.name or p.suffix == ".tmp"]
    sha_to_first: dict[str, str] = {}
    for name, data in valid.items():
        rec = reports[f"{name}.json"]
        jsonschema.validate(rec, SCHEMA)
        assert rec["status"] == "ok", rec
        assert rec["path"] == str(inbox / name)
        sha = hashlib.sha256(data).hexdigest()
        assert rec["image"]["sha256"] == sha
        if "duplicate_of" in rec:
            assert Path(rec["duplicate_of"]).read_bytes() == data
        else:
            assert sha not in sha_to_first, f"{name} and {sha_to_first.get(sha)} were both analysed"
            sha_to_first[sha] = name
    # every analysed asset has its signed sidecar, valid against the asset's bytes and carrying its finding
    for name in valid:
        rec = reports[f"{name}.json"]
        side = out / f"{Path(name).stem}.c2pa"
        assert rec["manifest"]["status"] == "ok" and rec["manifest"]["path"] == str(side), rec["manifest"]
        v = verify(inbox / name, sidecar=side)
        assert v["state"] in ("Valid", "Trusted"), (name, v.get("failure_codes"))
        assert v["lida_attribution"]["verdict"] == rec["verdict"], name
    assert sorted(p.name for p in out.glob("*.c2pa")) == sorted(f"{Path(n).stem}.c2pa" for n in valid)
    for name in corrupt:
        rec = reports[f"{name}.json"]
        jsonschema.validate(rec, SCHEMA)
        assert rec["status"] == "error" and rec["error"]
        err = json.loads((quar / f"{name}.error.json").read_text())
        assert err["error"] == rec["error"] and err["path"] == str(inbox / name)
        assert (quar / name).read_bytes() == corrupt[name] and (inbox / name).exists()
    # reports written before the kill were not recomputed after the restart: untouched, or (when the killed run
    # wrote it but did not journal it, and the restart journaled the same bytes under another name first) the
    # same record plus duplicate_of
    for name, (ino, mtime, text) in killed_reports.items():
        p = out / name
        if (p.stat().st_ino, p.stat().st_mtime_ns) != (ino, mtime):
            old, new = json.loads(text), json.loads(p.read_text())
            assert "duplicate_of" in new and "duplicate_of" not in old, f"{name} was written again after the restart"
            # the restart signs the duplicate's sidecar again; the earlier one is kept as a backup
            same = {k: v for k, v in new.items() if k not in ("duplicate_of", "manifest")}
            assert same == {k: v for k, v in old.items() if k != "manifest"}, f"{name} was recomputed"
            assert new["manifest"]["status"] == "ok" and Path(new["manifest"]["backup"]).is_file()
    with sqlite3.connect(out / ".lida-watch.sqlite") as db:
        rows = db.execute("SELECT path, state, processed, notified FROM assets").fetchall()
    assert sorted(r[0] for r in rows) == sorted(str(inbox / n) for n in [*valid, *corrupt])  # one row per file
    assert all(r[2] == 1 for r in rows), "an asset was processed twice"
    assert all(r[3] == 1 for r in rows)
    states = {r[0]: r[1] for r in rows}
    assert sum(s == "error" for s in states.values()) == len(corrupt)
    events = _log_events(log)
    assert any(e.get("event") == "throughput" for e in events)
    assert not any(e.get("level") == "error" for e in events), [e for e in events if e.get("level") == "error"][:3]
    shutil.rmtree(staging)


def test_watch_writes_sidecar_manifests(tmp_path, attributor, pm):
    """--manifest sidecar: one signed <stem>.c2pa per analysed asset beside the reports; bad files get none."""
    import argparse

    from lida_plugin.keys import init_keys
    from lida_plugin.watch.command import manifest_writer_for

    keys = init_keys(tmp_path / "keys")
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    args = argparse.Namespace(manifest="sidecar", out=str(out), keys=str(keys), source_type_policy="assertion")
    writer = manifest_writer_for(args, attributor.encoder, pm)
    try:
        cfg = WatchConfig(in_dir=inbox, out_dir=out, manifest="sidecar", settle=0.2)
        with Watcher(cfg, attributor, pm=pm, manifest_writer=writer) as w:
            write_png(inbox / "a.png", "gen-a", 1)
            (inbox / "b.png").write_bytes((inbox / "a.png").read_bytes())
            (inbox / "bad.png").write_bytes(b"nope")
            assert wait_for(lambda: len(list(out.glob("*.json"))) == 3 and w.idle())
            write_png(inbox / "c.png", "gen-b", 2)
            assert wait_for(lambda: (out / "c.c2pa").exists() and w.idle())
            os.rename(inbox / "c.png", inbox / "d.png")  # renamed: its report and sidecar follow it
            assert wait_for(lambda: (out / "d.c2pa").exists() and w.idle())
    finally:
        writer.close()
    assert not (out / "c.c2pa").exists() and not (out / "c.png.json").exists()
    d = json.loads((out / "d.png.json").read_text())
    assert d["manifest"]["path"] == str(out / "d.c2pa") and "duplicate_of" not in d
    for name in ("a", "b"):
        rec = json.loads((out / f"{name}.png.json").read_text())
        assert rec["manifest"]["status"] == "ok" and rec["manifest"]["path"] == str(out / f"{name}.c2pa")
        assert (out / f"{name}.c2pa").stat().st_size > 0
    assert not (out / "bad.c2pa").exists()
    outputs = {Path(c["path"]).name: c["outputs"] for c in pm.recorder.calls}
    assert outputs["a.png"]["manifest"] == str(out / "a.c2pa") and "manifest" not in outputs["bad.png"]


def test_restart_redelivers_cut_off_notifications(tmp_path, attributor, pm):
    """A run killed after journaling an asset but before its lida_asset_done calls: the restart delivers them."""
    from lida_plugin.journal import Completion, Journal

    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    src = write_png(inbox / "a.png", "gen-a", 1)
    st = src.stat()
    record = {"path": str(src), "status": "ok", "verdict": "real"}
    (out / "a.png.json").write_text(json.dumps(record))
    with Journal(out / ".lida-watch.sqlite") as j:  # as the killed run left it: committed, not yet delivered
        j.record([Completion(str(src), "0" * 64, "done", st.st_size, st.st_mtime_ns, report=str(out / "a.png.json"))])
    with Watcher(WatchConfig(in_dir=inbox, out_dir=out, settle=0.2), attributor, pm=pm) as w:
        assert wait_for(w.idle)
        time.sleep(0.3)
    assert [(c["path"], c["record"]) for c in pm.recorder.calls] == [(str(src), record)]  # once, not re-analysed
    with sqlite3.connect(out / ".lida-watch.sqlite") as db:
        assert db.execute("SELECT processed, notified FROM assets").fetchall() == [(1, 1)]


def test_start_sweeps_temporary_files_a_killed_run_left(tmp_path, attributor, pm):
    """Report temps (.lida-tmp-<name>.<thread>) and manifest temps (.<name>.lida-tmp-<hex>) a SIGKILL
    left in the output folder are removed at start (under the journal lock); other files stay."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    stale = [out / ".lida-tmp-a.png.json.1234", out / ".a.c2pa.lida-tmp-0badc0de"]
    keep = [out / ".hidden", out / "notes.lida-tmp-readme.txt", out / "a.c2pa.lida-bak"]
    for p in stale + keep:
        p.write_bytes(b"x")
    with Watcher(WatchConfig(in_dir=inbox, out_dir=out, settle=0.2), attributor, pm=pm):
        pass
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in keep)


def test_second_watcher_on_one_journal_is_refused(tmp_path, attributor, pm):
    from lida_plugin.errors import LidaError

    (tmp_path / "in").mkdir()
    cfg = WatchConfig(in_dir=tmp_path / "in", out_dir=tmp_path / "out")
    with Watcher(cfg, attributor, pm=pm), pytest.raises(LidaError, match="already using the journal"):
        Watcher(WatchConfig(in_dir=tmp_path / "in", out_dir=tmp_path / "out"), attributor, pm=pm).start()
    with Watcher(cfg, attributor, pm=pm):  # released on stop
        pass


def test_recursive_keeps_subfolders_and_skips_outputs_inside(tmp_path, attributor, pm):
    """-r: files in subfolders (also a folder created later) get reports under the same subfolder; output
    folders inside the watched folder and hidden folders are not watched."""
    inbox = tmp_path / "in"
    out, quar = inbox / "reports", inbox / "quarantine"  # outputs inside the drop folder
    write_png(inbox / "a" / "x.png", "gen-a", 1)
    write_png(inbox / ".cache" / "h.png", "gen-a", 2)
    cfg = WatchConfig(in_dir=inbox, out_dir=out, quarantine=quar, recursive=True, settle=0.2)
    with Watcher(cfg, attributor, pm=pm) as w:
        write_png(inbox / "b" / "c" / "y.png", "gen-b", 3)
        (inbox / "a" / "bad.png").write_bytes(b"junk")
        assert wait_for(lambda: len(list(out.rglob("*.json"))) == 3 and w.idle())
        time.sleep(0.5)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.json")) == [
        "a/bad.png.json",
        "a/x.png.json",
        "b/c/y.png.json",
    ]
    assert (quar / "a" / "bad.png").exists() and (quar / "a" / "bad.png.error.json").exists()
    assert len(pm.recorder.calls) == 3  # the quarantine copy inside the drop folder was not picked up


def test_a_name_that_is_not_utf8_is_reported_and_journaled(tmp_path, attributor, pm):
    """It used to stop the watcher at start-up (the journal's SQLite refused the name); see
    test_non_utf8_names.py for the other commands."""
    from test_non_utf8_names import RAW, odd

    from lida_plugin.textsafe import text_path

    folder = tmp_path / "src"
    write_png(folder / "good.png", "gen-a", 1)
    write_png(folder / "x.png", "gen-b", 2)
    try:
        os.rename(folder / "x.png", os.path.join(os.fsencode(folder), RAW))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"
    cfg = WatchConfig(in_dir=folder, out_dir=out, settle=0.2)
    with Watcher(cfg, attributor, pm=pm) as w:
        assert wait_for(lambda: len(list(out.glob("*.json"))) == 2 and w.idle())
    report = Path(os.fsdecode(os.path.join(os.fsencode(out), RAW + b".json")))
    assert json.loads(report.read_text())["path"] == text_path(odd(folder))
    with Watcher(cfg, attributor, pm=pm) as w:  # a restart: both journaled, nothing analysed again
        assert wait_for(lambda: w.idle())
    assert len(pm.recorder.calls) == 2


def test_quarantine_does_not_copy_what_a_link_points_at(tmp_path, attributor, pm):
    """A link to /dev/zero filled the disk (the copy never ended, nothing else was processed); a link to a
    file outside the watched folder copied that file into the quarantine."""
    inbox, out, quar = tmp_path / "in", tmp_path / "out", tmp_path / "q"
    inbox.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the quarantine")
    cfg = WatchConfig(in_dir=inbox, out_dir=out, settle=0.2, quarantine=quar)
    with Watcher(cfg, attributor, pm=pm) as w:
        (inbox / "zero.png").symlink_to("/dev/zero")
        (inbox / "bad.png").symlink_to(secret)
        assert wait_for(lambda: (quar / "zero.png.error.json").exists() and (quar / "bad.png.error.json").exists())
        write_png(inbox / "after.png", "gen-a", 5)
        assert wait_for(lambda: (out / "after.png.json").exists() and w.idle())
    assert not (quar / "zero.png").exists() and not (quar / "bad.png").exists()
    assert not [p for p in quar.iterdir() if p.name.startswith(".lida-tmp")]
    err = json.loads((quar / "bad.png.error.json").read_text())
    assert err["quarantined_as"] is None and "symbolic link" in err["not_copied"]
    assert json.loads((out / "after.png.json").read_text())["status"] == "ok"


def test_an_output_folder_that_holds_the_watched_folder_is_a_usage_error(tmp_path, isolated_env, capsys):
    """--out at or above IN_DIR excluded the watched folder itself: 'ready', then nothing ever analysed."""
    from lida_plugin.cli import main

    inbox = tmp_path / "w" / "in"
    inbox.mkdir(parents=True)
    for opt, folder in (("--out", tmp_path / "w"), ("--out", inbox), ("--quarantine", inbox),
                        ("--move-processed", tmp_path)):  # fmt: skip
        assert main(["watch", str(inbox), opt, str(folder), "--no-default-store"]) == 2
        assert "is the watched folder or a folder above it" in capsys.readouterr().err


def test_watch_without_out_stops_when_its_reader_goes_away(tmp_path, isolated_env):
    """Records on stdout, reader gone: it used to log a BrokenPipeError traceback per file and analyse the
    unjournaled files again at every rescan, for ever. Now it stops (exit 141) and journals nothing unsent."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    cmd = [sys.executable, "-m", "lida_plugin.cli", "watch", str(inbox), "--no-default-store", "--settle", "0.2",
           "--rescan", "1"]  # fmt: skip
    env = dict(os.environ, LIDA_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        p.stdout.close()  # the reader is gone
        time.sleep(3)  # started and watching
        write_png(inbox / "a.png", "gen-a", 1)
        rc = p.wait(timeout=60)
    finally:
        p.kill()
    err = p.stderr.read().decode()
    assert rc == 141, err
    assert "stdout_closed" in err and "Traceback" not in err
    with sqlite3.connect(inbox / ".lida-watch.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM assets").fetchone() == (0,)  # delivered to nobody: not done


def test_a_watched_folder_renamed_away_and_made_again_is_watched_again(tmp_path, attributor, pm):
    """`mv in in_old; mkdir in`: the observer kept watching the old folder; new files waited for the next
    rescan (60 s by default) without a word."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    cfg = WatchConfig(in_dir=inbox, out_dir=out, settle=0.2, rescan=3600)  # no rescan would find it
    with Watcher(cfg, attributor, pm=pm) as w:
        assert wait_for(w.idle)
        inbox.rename(tmp_path / "in_old")
        inbox.mkdir()
        time.sleep(1.5)  # the folder check runs once a second
        write_png(inbox / "new.png", "gen-a", 7)
        assert wait_for(lambda: (out / "new.png.json").exists(), timeout=20)


def test_a_file_renamed_in_the_folder_takes_its_report_along(tmp_path, attributor, pm):
    """`mv a.png b.png; mv b.png c.png` inside the folder: one report, for the name that is there (it used to be a
    report per name, the later ones `duplicate_of` a name that is gone); a real copy stays a duplicate."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    cfg = WatchConfig(in_dir=inbox, out_dir=out, settle=0.2, rescan=3600)
    with Watcher(cfg, attributor, pm=pm) as w:
        write_png(inbox / "a.png", "gen-a", 41)
        assert wait_for(lambda: (out / "a.png.json").exists() and w.idle())
        first = json.loads((out / "a.png.json").read_text())
        os.rename(inbox / "a.png", inbox / "b.png")
        assert wait_for(lambda: (out / "b.png.json").exists() and w.idle())
        os.rename(inbox / "b.png", inbox / "c.png")
        assert wait_for(lambda: (out / "c.png.json").exists() and w.idle())
        shutil.copy(inbox / "c.png", inbox / "copy.png")  # a second file with these bytes: a duplicate
        assert wait_for(lambda: (out / "copy.png.json").exists() and w.idle())
    reports = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(reports) == {"c.png.json", "copy.png.json"}
    c = reports["c.png.json"]
    jsonschema.validate(c, SCHEMA)
    assert c["path"] == str(inbox / "c.png") and "duplicate_of" not in c
    assert (c["verdict"], c["detection"], c["image"]) == (first["verdict"], first["detection"], first["image"])
    assert reports["copy.png.json"]["duplicate_of"] == str(inbox / "c.png")
    with sqlite3.connect(cfg.journal) as db:
        rows = dict(db.execute("SELECT path, state FROM assets").fetchall())
    assert rows == {str(inbox / "c.png"): "done", str(inbox / "copy.png"): "duplicate"}
    assert sorted(Path(x["path"]).name for x in pm.recorder.calls) == ["a.png", "b.png", "c.png", "copy.png"]
