"""Reliability under concurrency, crashes and hostile names (issue #14): real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_png

REPO = Path(__file__).resolve().parent.parent


def lida(*args, env, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lida_plugin.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


@pytest.fixture
def env(tmp_path, tiny_model) -> dict[str, str]:
    return dict(
        os.environ,
        LIDA_MODEL=str(tiny_model),
        LIDA_STORE=str(tmp_path / "store.sqlite"),
        LIDA_DEVICE="cpu",
        LIDA_THREADS="1",
        OMP_NUM_THREADS="1",
    )


# -- 1. concurrent registration ------------------------------------------------------------------
@pytest.mark.slow
def test_concurrent_register_overlapping_lists_stores_each_exemplar_once(tmp_path, env):
    paths = [write_png(tmp_path / "img" / f"a-{i:02d}.png", "gen-a", 2000 + i, size=64) for i in range(40)]
    lists = [paths, paths, paths[::-1]]  # two in the same order (they race on every file) and one backwards
    procs = [lida("register", "-g", "gen-a", *ps, env=env) for ps in lists]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err
        lines = out.splitlines()
        assert len(lines) == len(paths)  # every file got its line: none was dropped after a failure
        assert all(ln.split("\t")[1] in ("registered", "already registered") for ln in lines), out
    added = sum(out.count("\tregistered\t") for out, _ in outs)
    assert added == len(paths)  # each exemplar registered by exactly one process
    with sqlite3.connect(env["LIDA_STORE"]) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM exemplars").fetchone() == (40, 40)


def test_register_reports_an_unexpected_sqlite_error_per_file(tmp_path, isolated_env, images, monkeypatch, capsys):
    from lida_plugin import store as store_mod
    from lida_plugin.cli import EXIT_FILE_ERRORS, main

    real = store_mod.ExemplarStore.register

    def flaky(self, encoder, decoded, *a, **kw):
        if decoded.path.endswith("-1.png"):
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, encoder, decoded, *a, **kw)

    monkeypatch.setattr(store_mod.ExemplarStore, "register", flaky)
    rc = main(["register", "-g", "gen-a", *map(str, images["gen-a"])])
    cap = capsys.readouterr()
    assert rc == EXIT_FILE_ERRORS
    assert cap.out.count("\tregistered\t") == 2  # the files after the failing one were still registered
    assert "gen-a-1.png\terror\t" in cap.err and "disk I/O error" in cap.err


# -- 2. a SIGKILL during `lida attribute --manifest embed --in-place` --------------------------------
def _temps(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if ".lida-tmp-" in n)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    from lida_plugin.keys import init_keys

    return init_keys(tmp_path_factory.mktemp("keys") / "k")


@pytest.mark.slow
def test_sigkill_mid_embed_leaves_temps_that_the_next_run_sweeps(tmp_path, env, keys):
    d = tmp_path / "assets"
    paths = [write_png(d / f"x-{i:02d}.png", "gen-a", 3000 + i, size=64) for i in range(30)]
    args = ["attribute", "--manifest", "embed", "--in-place", "--keys", keys, "--jsonl"]
    left: list[str] = []
    for _ in range(5):  # kill the run the moment a manifest temp file appears, until one is left behind
        p = lida(*args, *paths, env=env)
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            if _temps(d):
                os.kill(p.pid, signal.SIGKILL)
                break
        p.communicate(timeout=60)
        left = _temps(d)
        if left:
            break
    assert left, "no run was caught writing a temp file"
    # the next batch run in that folder removes what the killed one left (its writer is gone)
    p = lida(*args, paths[0], env=env)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert _temps(d) == []
    # ... and the originals are either untouched or signed: every asset still decodes
    from lida_plugin.decode import decode_file

    for x in paths:
        decode_file(x)


def test_sweep_keeps_a_live_writers_temp_and_foreign_names(tmp_path):
    from lida_plugin.tempfiles import sweep_stale_temps, temp_path, writing

    dest = tmp_path / "a.png"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".a.png.lida-tmp-{dead_pid}-0123abcd"
    stale.write_bytes(b"left by a killed run")
    foreign = [tmp_path / ".a.png.lida-tmp-notours", tmp_path / "a.png.lida-tmp-1-0123abcd", tmp_path / "b.png"]
    for f in foreign:
        f.write_bytes(b"x")
    # a live writer in another process: its pid is alive and it holds the lock on its temp
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from lida_plugin.tempfiles import temp_path, writing\n"
         "t = temp_path(Path(sys.argv[1]))\n"
         "with writing(t) as f:\n    f.write(b'live'); f.flush(); print(t, flush=True); time.sleep(60)\n",
         str(dest)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        live = Path(child.stdout.readline().strip())
        assert live.exists()
        mine = temp_path(dest)
        with writing(mine):  # this process's own temp, being written right now
            removed = sweep_stale_temps([tmp_path])
            assert mine.exists()
        assert removed == [stale]
        assert live.exists() and not stale.exists()
        assert all(f.exists() for f in foreign)
    finally:
        child.kill()
        child.wait()
    assert sweep_stale_temps([tmp_path]) == [live]  # once its writer is gone


# -- 4. key folder permissions whatever the umask ------------------------------------------------
def test_keys_init_under_umask_000_is_private(tmp_path):
    d = tmp_path / "keys"
    code = "import os, sys; os.umask(0); from lida_plugin.keys import init_keys; init_keys(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(d)], check=True, timeout=60)
    assert d.stat().st_mode & 0o777 == 0o700
    for name in ("root-ca.pem", "signer-chain.pem", "lida-keys.json"):
        mode = (d / name).stat().st_mode & 0o777
        assert mode & 0o133 == 0, f"{name} is {oct(mode)}"  # at most 0644: never group/world-writable
    for name in ("root-ca.key", "signer.key"):
        assert (d / name).stat().st_mode & 0o777 == 0o600


def test_keys_init_refuses_a_folder_others_can_write(tmp_path):
    from lida_plugin.keys import KeysError, init_keys

    d = tmp_path / "shared-keys"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(KeysError, match="writable by others"):
        init_keys(d)
    assert list(d.iterdir()) == []


# -- 5. hostile names and special files ----------------------------------------------------------
def test_newline_in_a_file_name_cannot_forge_a_text_line(tmp_path, env):
    evil = write_png(tmp_path / "a\nfake.png\tai-generated\tgen-x\t0.999.png", "gen-a", 1)
    bad = tmp_path / "b\rc\x1b[2J.png"
    bad.write_bytes(b"not an image")
    p = lida("attribute", evil, bad, env=env)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    lines = out.split("\n")
    assert lines[-1] == "" and len(lines) == 3, out  # one line per file
    assert lines[0].startswith(str(tmp_path) + "/a\\nfake.png\\tai-generated\\tgen-x\\t0.999.png\t")
    assert lines[1].startswith(str(tmp_path) + "/b\\rc\\x1b[2J.png\terror\t")
    assert "\r" not in out and "\x1b" not in out
    # JSON output keeps the exact name
    p = lida("attribute", "--jsonl", evil, env=env)
    out, _ = p.communicate(timeout=120)
    assert json.loads(out)["path"] == str(evil)


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "dir"])
def test_special_files_are_refused_without_being_opened(tmp_path, env, kind):
    import socket

    target = tmp_path / f"special-{kind}.png"
    keep = None
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        keep = socket.socket(socket.AF_UNIX)
        keep.bind(str(target))
    elif kind == "dir":
        target.mkdir()
    else:
        target = Path("/dev/zero")
    try:
        p = lida("attribute", "--jsonl", target, env=env)
        out, err = p.communicate(timeout=60)  # a read of a FIFO without a writer would hang here
    finally:
        if keep is not None:
            keep.close()
    assert p.returncode == 1, err
    rec = json.loads(out)
    assert rec["status"] == "error"
    want = "is a directory" if kind == "dir" else "not a regular file"
    assert want in rec["error"], rec["error"]


def test_read_bytes_refuses_a_fifo_directly(tmp_path):
    from lida_plugin.decode import read_bytes
    from lida_plugin.errors import InputError

    f = tmp_path / "pipe.png"
    os.mkfifo(f)
    with pytest.raises(InputError, match="not a regular file"):
        read_bytes(f)


# -- 3. a writer that closes and reopens the file between chunks ---------------------------------
def _png(kind: str, seed: int, size: int = 128) -> bytes:
    from io import BytesIO

    from conftest import synthetic_pixels
    from PIL import Image

    buf = BytesIO()
    Image.fromarray(synthetic_pixels(kind, seed, size)).save(buf, format="PNG")
    return buf.getvalue()


def _close_reopen_writer(path: Path, data: bytes, chunks: int, pause: float) -> None:
    step = len(data) // chunks + 1
    for i in range(0, len(data), step):
        with open(path, "ab") as f:  # open, append one chunk, close: a close event after every chunk
            f.write(data[i : i + step])
        time.sleep(pause)


@pytest.mark.slow
def test_watch_close_reopen_writer_is_analysed_once_when_complete(tmp_path, attributor):
    import threading

    from lida_plugin.manager import new_plugin_manager
    from lida_plugin.watch import WatchConfig, Watcher

    inbox, out, quar = tmp_path / "in", tmp_path / "out", tmp_path / "q"
    inbox.mkdir()
    files = {f"up-{i}.png": _png(("gen-a", "gen-b", "real")[i % 3], 4000 + i) for i in range(6)}
    # pauses longer than the close-settle time (0.1 s), shorter than the settle time (1 s)
    cfg = WatchConfig(in_dir=inbox, out_dir=out, quarantine=quar, settle=1.0, rescan=30.0)
    with Watcher(cfg, attributor, pm=new_plugin_manager(load_entrypoints=False)) as w:
        writers = [threading.Thread(target=_close_reopen_writer, args=(inbox / n, d, 4, 0.4)) for n, d in files.items()]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (len(list(out.glob("*.json"))) >= len(files) and w.idle()):
            time.sleep(0.1)
        time.sleep(1.5)  # anything still pending would show up now
    import hashlib

    for name, data in files.items():
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["status"] == "ok", rec.get("error")
        assert rec["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert not quar.exists() or list(quar.iterdir()) == []  # no stale quarantine entries
    with sqlite3.connect(cfg.journal) as db:
        rows = db.execute("SELECT path, state, processed FROM assets").fetchall()
    assert sorted(r[0] for r in rows) == sorted(str(inbox / n) for n in files), rows  # one row per file
    assert {r[1] for r in rows} == {"done"} and {r[2] for r in rows} == {1}


def test_watch_a_bad_file_replaced_by_a_good_one_leaves_no_stale_quarantine(tmp_path, attributor):
    from lida_plugin.manager import new_plugin_manager
    from lida_plugin.watch import WatchConfig, Watcher

    inbox, out, quar = tmp_path / "in", tmp_path / "out", tmp_path / "q"
    inbox.mkdir()
    good = _png("gen-b", 77)
    cfg = WatchConfig(in_dir=inbox, out_dir=out, quarantine=quar, settle=0.3, rescan=30.0)
    with Watcher(cfg, attributor, pm=new_plugin_manager(load_entrypoints=False)) as w:
        (inbox / "x.png").write_bytes(good[:200])  # a writer that stalled for longer than the settle time
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (quar / "x.png.error.json").exists():
            time.sleep(0.05)
        assert (quar / "x.png.error.json").exists()
        time.sleep(0.2)
        with open(inbox / "x.png", "ab") as f:  # ... and then finished the file
            f.write(good[200:])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            json.loads((out / "x.png.json").read_text()).get("status") == "ok" and w.idle()
        ):
            time.sleep(0.05)
    assert json.loads((out / "x.png.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in quar.iterdir()) == []  # the stale entry of the partial file is gone
    with sqlite3.connect(cfg.journal) as db:
        assert db.execute("SELECT state, processed FROM assets").fetchall() == [("done", 1)]


def test_verify_text_and_watch_log_escape_control_characters(tmp_path, env):
    from lida_plugin.watch.logs import _fmt

    evil = write_png(tmp_path / "v\nevent=asset state=done.png", "gen-a", 2)
    p = subprocess.run(
        [sys.executable, "-m", "lida_plugin.cli", "verify", str(evil)], capture_output=True, text=True, env=env
    )
    assert p.stdout.count("\n") == 1 and "v\\nevent=asset" in p.stdout, p.stdout
    assert "\n" not in _fmt("a\nevent=forged") and "\n" not in _fmt("x\ny")


def _write_many(path: str, tag: str) -> None:
    from lida_plugin.files import atomic_write

    for i in range(300):
        atomic_write(path, (tag * 4096 + str(i)).encode())


def test_two_forked_processes_atomic_writing_one_path_never_tear_or_fail(tmp_path):
    """Temporary names were per thread id only, and a forked process's thread keeps its parent's id
    (fork is multiprocessing's default start method on Linux; a host that forks its ingest workers
    and calls the watcher's or the hooks' writers hits it): two writers shared one temporary file,
    interleaved their bytes in it, and the second rename failed with FileNotFoundError."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    dest = tmp_path / "report.json"
    procs = [ctx.Process(target=_write_many, args=(str(dest), tag)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    body = dest.read_text()
    assert body[:4096] in ("a" * 4096, "b" * 4096) and body[4096:] == "299"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["report.json"]  # no temp left behind
