"""``lida batch``: sources, Parquet parts, resume, the local engine under failure (worker SIGKILL, job SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402
from conftest import write_png  # noqa: E402

from lida_plugin.batch.local import LocalEngine  # noqa: E402
from lida_plugin.batch.sink import JOB_FILE, DestError, PartSink, read_results  # noqa: E402
from lida_plugin.batch.sources import SourceError, list_assets, read_asset  # noqa: E402
from lida_plugin.batch.worker import JobConfig  # noqa: E402
from lida_plugin.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "lida_plugin/schemas/attribution-result.schema.json").read_text())
KINDS = ("gen-a", "gen-b", "real")


def make_images(folder: Path, n: int, size: int = 64) -> list[Path]:
    return [write_png(folder / f"{KINDS[i % 3]}-{i:04d}.png", KINDS[i % 3], i, size) for i in range(n)]


def rows_by_path(dest: Path) -> Counter:
    return Counter(read_results(dest).column("path").to_pylist())


def spawn_children() -> list[int]:
    """PIDs of this process's multiprocessing-spawned children (the local engine's workers)."""
    out = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in kids:
            try:
                if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                    out.append(int(k))
            except OSError:
                pass
    return out


# -- sources ---------------------------------------------------------------------------------
def test_sources_folder_glob_lists_and_uri(tmp_path):
    imgs = make_images(tmp_path / "a", 4)
    write_png(tmp_path / "a" / "sub" / "deep.png", "real", 9)
    (tmp_path / "a" / ".hidden.png").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    folder = list_assets(str(tmp_path / "a"))
    assert folder == sorted(folder) and len(folder) == 5 and all(os.path.isabs(p) for p in folder)
    assert list_assets(str(tmp_path / "a" / "*.png")) == sorted(str(p) for p in imgs)
    assert len(list_assets(str(tmp_path / "a" / "**" / "*.png"))) == 5

    lst = tmp_path / "list.txt"
    lst.write_text(f"# a comment\na/{imgs[0].name}\n{imgs[1]}\n\na/{imgs[0].name}\n")  # relative, absolute, duplicate
    assert list_assets(str(lst)) == [str(imgs[0]), str(imgs[1])]
    csvf = tmp_path / "list.csv"
    csvf.write_text(f"id,path\n1,{imgs[2]}\n2,{imgs[3]}\n")
    assert list_assets(str(csvf)) == [str(imgs[2]), str(imgs[3])]
    pq.write_table(pa.table({"path": [str(imgs[1]), str(imgs[0])]}), tmp_path / "list.parquet")
    assert list_assets(str(tmp_path / "list.parquet")) == [str(imgs[1]), str(imgs[0])]

    uris = list_assets(f"file://{tmp_path / 'a'}")
    assert uris == ["file://" + p for p in folder]
    assert read_asset(uris[0]) == Path(folder[0]).read_bytes()
    assert read_asset(str(imgs[0])) is None  # local: Attributor.prepare reads it itself
    assert list_assets(f"file://{tmp_path}/a/*.png") == sorted("file://" + str(p) for p in imgs)

    with pytest.raises(SourceError, match="no such file"):
        list_assets(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="matches no files"):
        list_assets(str(tmp_path / "a" / "*.jpg"))
    pq.write_table(pa.table({"file": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(SourceError, match="'path' column"):
        list_assets(str(tmp_path / "bad.parquet"))
    pq.write_table(pa.table({"path": [1, 2]}), tmp_path / "ints.parquet")  # was an AttributeError traceback
    with pytest.raises(SourceError, match="'path' column holds int64, not strings"):
        list_assets(str(tmp_path / "ints.parquet"))


def test_csv_lists_as_spreadsheets_write_them(tmp_path):
    """A byte-order mark (Excel's "CSV UTF-8") is not part of the header; a quoted field keeps its newline."""
    odd = write_png(tmp_path / "new\nline.png", "real", 3)
    plain = write_png(tmp_path / "plain.png", "real", 4)
    csvf = tmp_path / "list.csv"
    csvf.write_bytes(b"\xef\xbb\xbfpath\n" + f'"{odd}"\n{plain}\n'.encode())
    assert list_assets(str(csvf)) == [str(odd), str(plain)]
    txt = tmp_path / "list.txt"
    txt.write_bytes(b"\xef\xbb\xbf" + f"{plain}\n".encode())
    assert list_assets(str(txt)) == [str(plain)]


def test_read_asset_errors_name_the_asset(tmp_path):
    from lida_plugin.errors import InputError

    with pytest.raises(InputError, match="no such file"):
        read_asset(f"file://{tmp_path}/nope.png")
    with pytest.raises(InputError, match="is a directory"):
        read_asset(f"file://{tmp_path}")


# -- sink ------------------------------------------------------------------------------------
def test_sink_commits_atomically_refuses_a_second_writer_and_another_model(tmp_path):
    dest = tmp_path / "out"
    job = {"model_id": "m1", "store_id": "s1"}
    sink = PartSink(dest, job=job, part_rows=2)
    rec = {"path": "/x/1.png", "status": "error", "error": "not an image", "model_id": "m1", "store_id": "s1"}
    assert sink.add(rec) is None
    assert not list(dest.glob("*.parquet"))  # buffered, not committed
    with pytest.raises(DestError, match="another lida batch job"):
        PartSink(dest, job=job)
    part, recs = sink.add(rec | {"path": "/x/2.png"})
    assert part.exists() and [r["path"] for r in recs] == ["/x/1.png", "/x/2.png"]
    assert sink.add(rec) is None and sink.rows == []  # the same asset twice: dropped, never written again
    (dest / ".part-stale.tmp").write_bytes(b"half a part")
    sink.close()
    sink = PartSink(dest, job=job)
    assert sink.done == {"/x/1.png", "/x/2.png"} and not (dest / ".part-stale.tmp").exists()
    sink.close()
    t = read_results(dest)
    assert t.num_rows == 2 and t.column("error").to_pylist() == ["not an image"] * 2
    assert json.loads(t.column("record")[0].as_py())["path"] == "/x/1.png"
    with pytest.raises(DestError, match="model_id"):
        PartSink(dest, job={"model_id": "m2", "store_id": "s1"})
    assert json.loads((dest / JOB_FILE).read_text())["model_id"] == "m1"


# -- the local engine ------------------------------------------------------------------------
def test_local_engine_survives_a_killed_worker(tiny_model, tmp_path):
    paths = [str(p) for p in make_images(tmp_path / "img", 120)]
    engine = LocalEngine(JobConfig(model=str(tiny_model), use_default_store=False), workers=2, chunk_size=4)
    seen: Counter = Counter()
    killed = None
    for rec in engine.run(paths):
        seen[rec["path"]] += 1
        assert rec["status"] == "ok", rec
        if killed is None:
            killed = engine.worker_pids()[0]
            os.kill(killed, signal.SIGKILL)  # mid-run: it holds chunks that must be redone, not lost
    assert engine.deaths == 1
    assert seen == Counter(paths)  # every asset exactly once


def test_local_engine_started_early_runs_and_close_stops_unused_workers(tiny_model, tmp_path):
    """start() spawns the workers before the paths are known; run() uses them; close() without a run
    stops them (the command's path when its own setup fails after start())."""
    paths = [str(p) for p in make_images(tmp_path / "img", 10)]
    cfg = JobConfig(model=str(tiny_model), use_default_store=False)
    engine = LocalEngine(cfg, workers=2, chunk_size=4)
    engine.start()
    pids = sorted(engine.worker_pids())
    deadline = time.monotonic() + 30  # a just-spawned child shows its own command line once it has exec'd
    while sorted(spawn_children()) != pids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 2 and sorted(spawn_children()) == pids
    assert Counter(r["path"] for r in engine.run(paths)) == Counter(paths)
    assert spawn_children() == []  # run() stops them at the end
    idle = LocalEngine(cfg, workers=2)
    idle.start()
    assert len(idle.worker_pids()) == 2
    idle.close()
    assert idle.worker_pids() == [] and spawn_children() == []


@pytest.mark.slow
def poison_site(folder: Path, *modules: str) -> Path:
    """A folder with a ``sitecustomize.py`` that, in every Python process started with it on
    ``PYTHONPATH`` and ``LIDA_TEST_POISON`` set, makes ``prepare_one`` (as ``modules`` import it) exit
    the process on that path: a native decoder crash on one asset."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import importlib, os\n"
        "p = os.environ.get('LIDA_TEST_POISON')\n"
        "if p:\n"
        "    import lida_plugin.batch.worker as w\n"
        "    real = w.prepare_one\n"
        "    def crash(att, path):\n"
        "        if path == p:\n"
        "            os._exit(139)\n"
        "        return real(att, path)\n"
        f"    for m in {list(modules)!r}:\n"
        "        importlib.import_module(m).prepare_one = crash\n"
    )
    return folder


def test_local_engine_blames_only_the_asset_that_keeps_killing_its_worker(tiny_model, tmp_path, monkeypatch):
    """An asset whose worker dies every time (a decoder crash) becomes an error row; its neighbours do not."""
    paths = [str(p) for p in make_images(tmp_path / "img", 12)]
    poison = paths[5]
    monkeypatch.setenv("LIDA_TEST_POISON", poison)  # read by the sitecustomize below, in the spawned workers
    site = poison_site(tmp_path / "site", "lida_plugin.batch.worker", "lida_plugin.batch.local")
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    engine = LocalEngine(
        JobConfig(model=str(tiny_model), use_default_store=False), workers=2, chunk_size=4, max_attempts=2
    )
    recs = {}
    for r in engine.run(paths):
        assert r["path"] not in recs
        recs[r["path"]] = r
    assert set(recs) == set(paths)
    assert recs[poison]["status"] == "error" and "worker process died 2 times" in recs[poison]["error"]
    assert all(r["status"] == "ok" for p, r in recs.items() if p != poison)


# -- the command -----------------------------------------------------------------------------
def test_batch_cli_writes_parquet_resumes_and_keeps_error_rows(isolated_env, tmp_path, capsys):
    import jsonschema

    imgs = make_images(tmp_path / "src", 30)
    (tmp_path / "src" / "broken.png").write_bytes(b"not an image at all")
    dest = tmp_path / "out"
    args = ["batch", str(tmp_path / "src"), "--out", str(dest), "--workers", "2", "--part-size", "7",
            "--chunk-size", "4"]  # fmt: skip
    assert main(args + ["--limit", "12"]) == 1  # broken.png sorts first: an error row, exit 1
    first = rows_by_path(dest)
    assert len(first) == 12 and set(first.values()) == {1}
    assert main(args) == 0  # the other 19, all fine
    err = capsys.readouterr().err
    assert "12 already in" in err and "19 to attribute" in err
    t = read_results(dest)
    assert sorted(t.column("path").to_pylist()) == sorted([str(p) for p in imgs] + [str(tmp_path / "src/broken.png")])
    broken = t.filter(pa.compute.equal(t.column("status"), "error")).to_pylist()
    assert len(broken) == 1 and broken[0]["path"].endswith("broken.png") and "not an image" in broken[0]["error"]
    ok = [r for r in t.to_pylist() if r["status"] == "ok"]
    assert {r["verdict"] for r in ok} >= {"real", "ai-generated"}
    for r in ok:
        rec = json.loads(r["record"])
        jsonschema.validate(rec, SCHEMA)
        assert r["sha256"] == rec["image"]["sha256"] and r["ai_score"] == rec["detection"]["ai_score"]
        assert r["model_id"] == "tiny-test-encoder"
    parts = sorted(dest.glob("part-*.parquet"))
    assert main(args) == 0  # nothing left: a rerun writes nothing
    assert sorted(dest.glob("part-*.parquet")) == parts and sum(rows_by_path(dest).values()) == 31
    assert "0 to attribute" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_written_is_a_setup_error(isolated_env, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("a file, not a folder")
    assert main(["batch", str(tmp_path), "--out", str(out)]) == 3
    assert f"--out {out}: cannot create it" in capsys.readouterr().err
    assert out.read_text() == "a file, not a folder"


def test_batch_setup_error_after_the_workers_started_stops_them(isolated_env, tmp_path, capsys):
    """The workers start before the driver opens the store and DEST; a DEST that belongs to another
    model is refused with exit 3 and no worker is left behind."""
    make_images(tmp_path / "src", 4)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / JOB_FILE).write_text(json.dumps({"format": 1, "model_id": "another-model", "store_id": "x"}))
    assert main(["batch", str(tmp_path / "src"), "--out", str(dest), "--workers", "2"]) == 3
    assert "model_id" in capsys.readouterr().err
    assert spawn_children() == [] and not list(dest.glob("part-*.parquet"))


def test_batch_calls_asset_done_after_commit_and_writes_sidecars(isolated_env, tmp_path, monkeypatch):
    from lida_plugin import hookimpl
    from lida_plugin.manager import new_plugin_manager

    pytest.importorskip("c2pa")
    imgs = make_images(tmp_path / "src", 5)
    keys = tmp_path / "keys"
    assert main(["keys", "init", str(keys)]) == 0
    seen = []

    class Plugin:
        @hookimpl
        def lida_asset_done(self, path, record, outputs):
            seen.append((path, outputs))
            assert Path(outputs["report"]).exists()  # the part holding the row is committed

    pm = new_plugin_manager()  # the host's manager travels into the command
    pm.register(Plugin())
    dest = tmp_path / "out"
    rc = main(["batch", str(tmp_path / "src"), "--out", str(dest), "--workers", "1", "--manifest", "sidecar",
               "--keys", str(keys)], pm=pm)  # fmt: skip
    assert rc == 0
    assert sorted(p for p, _ in seen) == sorted(str(p) for p in imgs)
    for p, outputs in seen:
        assert outputs["manifest"] == str(Path(p).with_suffix(".c2pa")) and Path(outputs["manifest"]).is_file()
    rec = json.loads(read_results(dest).column("record")[0].as_py())
    assert rec["manifest"]["status"] == "ok"


def run_killing_one(tmp_path: Path, find_pids, *args: str):
    """``lida batch`` over 80 images whose first ``lida_asset_done`` SIGKILLs the first process ``find_pids()``
    names (a worker or an actor); ``(images, dest, exit status, killed pids)``."""
    from lida_plugin import hookimpl
    from lida_plugin.manager import new_plugin_manager

    imgs = make_images(tmp_path / "src", 80)
    killed = []

    class Killer:
        @hookimpl
        def lida_asset_done(self, path, record, outputs):
            if not killed:
                pids = find_pids()
                assert pids, "no worker process found"
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    pm = new_plugin_manager()
    pm.register(Killer())
    dest = tmp_path / "out"
    rc = main(["batch", str(tmp_path / "src"), "--out", str(dest), "--chunk-size", "4", *args], pm=pm)
    return imgs, dest, rc, killed


def test_batch_kill_a_worker_in_the_job_then_exactly_one_row_per_asset(isolated_env, tmp_path):
    """SIGKILL a worker process of a running ``lida batch`` (from a lida_asset_done hook, after the first part)."""
    imgs, dest, rc, killed = run_killing_one(tmp_path, spawn_children, "--workers", "2", "--part-size", "5")
    assert rc == 0 and killed
    counts = rows_by_path(dest)
    assert counts == Counter(str(p) for p in imgs)
    assert set(read_results(dest).column("status").to_pylist()) == {"ok"}


def _batch_cmd(src: Path, dest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lida_plugin.cli", "batch", str(src), "--out", str(dest), *extra]


@pytest.mark.slow
def test_batch_sigint_keeps_committed_parts_and_the_rerun_finishes(isolated_env, tmp_path):
    imgs = make_images(tmp_path / "src", 400, size=128)
    dest = tmp_path / "out"
    cmd = _batch_cmd(tmp_path / "src", dest, "--workers", "1", "--part-size", "10", "--chunk-size", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not list(dest.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    partial = rows_by_path(dest)
    assert 0 < len(partial) < len(imgs) and set(partial.values()) == {1}
    assert not list(dest.glob(".part-*"))  # no half-written part left behind
    done = subprocess.run(cmd, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert f"{len(partial)} already in".encode() in done.stderr
    assert rows_by_path(dest) == Counter(str(p) for p in imgs)


def test_pack_round_trip_keeps_every_field_but_not_the_pixels(tiny_model, tmp_path):
    from lida_plugin.batch.worker import build_attributor, pack, unpack

    att = build_attributor(JobConfig(model=str(tiny_model), use_default_store=False))
    [img] = make_images(tmp_path / "img", 1, size=256)
    prepared = att.prepare(str(img))
    blob = pack(prepared)
    assert len(blob) < prepared.crops.nbytes + 4096  # the 256x256x3 placeholder is not expanded
    back = unpack(blob)
    assert back.decoded.pixels.shape == prepared.decoded.pixels.shape and back.sha256 == prepared.sha256
    assert (back.crops == prepared.crops).all()
    assert [r.to_dict() for r in att.finish([back])] == [r.to_dict() for r in att.finish([prepared])]
    bad = att.prepare(str(tmp_path / "missing.png"))
    assert unpack(pack(bad)).error == bad.error


def test_an_unreachable_ray_address_is_a_clear_error_not_a_hang(isolated_env, tmp_path, capsys):
    """Ray retries an unreachable cluster for minutes; lida batch checks the address first (no Ray
    needed for this: the check runs before Ray is imported to connect)."""
    import socket

    from lida_plugin.batch.ray_engine import check_reachable
    from lida_plugin.errors import LidaError

    with socket.socket() as srv:  # a listening port: reachable
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        check_reachable(f"127.0.0.1:{srv.getsockname()[1]}")
        check_reachable(f"ray://127.0.0.1:{srv.getsockname()[1]}")
        free = srv.getsockname()[1]
    check_reachable("auto")  # left to Ray
    with pytest.raises(LidaError, match=f"cannot reach the Ray cluster at '127.0.0.1:{free}'"):
        check_reachable(f"127.0.0.1:{free}", timeout=5)
    pytest.importorskip("ray")
    make_images(tmp_path / "src", 2)
    t = time.monotonic()
    rc = main(["batch", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--engine", "ray",
               "--ray-address", f"127.0.0.1:{free}"])  # fmt: skip
    assert rc == 3 and time.monotonic() - t < 30
    assert "cannot reach the Ray cluster" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written: the engine failed before DEST was opened


def test_batch_verbose_logs_its_start_up_and_rate(isolated_env, tmp_path, caplog):
    """``lida -v batch`` says how long the set-up and the engine's start-up took and the rate after the
    first record, which tell a fixed cost from a slow pipeline."""
    import logging

    make_images(tmp_path / "src", 6)
    with caplog.at_level(logging.INFO, logger="lida.batch"):
        rc = main(["-v", "batch", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--workers", "1",
                   "--chunk-size", "2"])  # fmt: skip
    assert rc == 0
    msgs = [r.getMessage() for r in caplog.records if r.name == "lida.batch"]
    assert any(m.startswith("setup: ") and "6 asset(s) listed" in m for m in msgs), msgs
    assert any(m.startswith("first record ") for m in msgs), msgs
    assert any(m.startswith("6 record(s) in ") and "after the first delivery" in m for m in msgs), msgs


@pytest.mark.parametrize(
    ("opt", "message"),
    [(["--workers", "0"], "--workers must be >= 1"), (["--limit", "-1"], "--limit must be >= 0"),
     (["--part-seconds", "-1"], "--part-seconds must be > 0"), (["--part-seconds", "nan"], "must be > 0"),
     (["--workers", "100000"], "--workers must be between 1 and"),
     (["--engine", "ray", "--workers", "100000"], "--workers must be between 1 and")],  # a local Ray: as many CPUs
)  # fmt: skip
def test_batch_refuses_option_values_that_cannot_work(isolated_env, tmp_path, capsys, opt, message):
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(tmp_path), "--out", str(tmp_path / "out"), *opt])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


_STARTING = """
import os, signal, sys, time
from lida_plugin.batch.local import LocalEngine
from lida_plugin.batch.worker import JobConfig
if __name__ == "__main__":
    eng = LocalEngine(JobConfig(model=os.environ["LIDA_MODEL"]), workers=2)
    eng.start()
    time.sleep(float(sys.argv[2]))  # the workers are importing now
    try:
        os.killpg(0, signal.SIGINT)  # ^C in a terminal: the whole process group
        time.sleep(2)
    except KeyboardInterrupt:
        print("driver interrupted", file=sys.stderr)
    time.sleep(float(sys.argv[1]))  # the workers' tracebacks, if any, come meanwhile
    eng.close()
"""


def test_ctrl_c_while_workers_start_prints_no_worker_traceback(isolated_env, tmp_path):
    """A ^C while spawned workers were still importing printed their KeyboardInterrupt tracebacks."""
    script = tmp_path / "starting.py"
    script.write_text(_STARTING)
    proc = subprocess.run([sys.executable, str(script), "2", "0.3"], capture_output=True, text=True, timeout=120,
                          start_new_session=True, env=os.environ.copy())  # fmt: skip
    assert "driver interrupted" in proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
