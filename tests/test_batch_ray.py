"""``lida batch --engine ray`` on a local Ray instance with 2 CPUs: an encoder actor killed mid-run,
the job stopped with SIGINT, then the rerun: exactly one row per asset.

Needs the ``ray`` extra (``pip install ".[ray]"``); skipped cleanly without it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from test_batch import make_images, poison_site, rows_by_path, run_killing_one  # noqa: E402

from lida_plugin.batch.sink import read_results  # noqa: E402
from lida_plugin.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module (the engine joins it and leaves it running)."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


def actor_pids(stage: str) -> list[int]:
    """PIDs of Ray worker processes running ``stage`` actors (Ray names the process after the actor)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::") and stage.encode() in cmd:
            out.append(int(d.name))
    return out


def test_ray_engine_blames_only_the_asset_that_keeps_killing_its_actor(isolated_env, tmp_path):
    """An asset whose actor dies every time it is read (a decoder crash) becomes an error row after
    Ray's retries; its batch's other assets are run again one at a time and get their records. Ray's
    own instance (started by the job) so that its workers inherit the crash hook; placed before
    the tests that start the module's Ray."""
    import os

    imgs = make_images(tmp_path / "src", 12, size=96)
    poison = str(imgs[5])
    site = poison_site(tmp_path / "site", "lida_plugin.batch.ray_engine")
    env = {
        **os.environ,
        "LIDA_TEST_POISON": poison,
        "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    dest = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lida_plugin.cli", "batch", str(tmp_path / "src"), "--out", str(dest), "--engine",
         "ray", "--workers", "2", "--chunk-size", "4"],
        env=env, capture_output=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr.decode()[-3000:]  # one error row
    assert rows_by_path(dest) == Counter(str(p) for p in imgs)
    rows = {r["path"]: r for r in read_results(dest).to_pylist()}
    assert rows[poison]["status"] == "error" and "Ray actor died 3 times" in rows[poison]["error"]
    assert all(r["status"] == "ok" for p, r in rows.items() if p != poison)
    assert b"running them one at a time" in proc.stderr


def test_ray_engine_survives_a_killed_encoder_actor(isolated_env, tmp_path, local_ray):
    imgs, dest, rc, killed = run_killing_one(
        tmp_path, lambda: actor_pids("EncodeStage"), "--engine", "ray", "--part-size", "8"
    )
    assert rc == 0 and killed
    assert rows_by_path(dest) == Counter(str(p) for p in imgs)
    assert set(read_results(dest).column("status").to_pylist()) == {"ok"}


def test_ray_engine_sigint_then_rerun_gives_one_row_per_asset(isolated_env, tmp_path, local_ray):
    imgs = make_images(tmp_path / "src", 160, size=96)
    (tmp_path / "src" / "zz-broken.png").write_bytes(b"not an image")
    dest = tmp_path / "out"
    args = ["batch", str(tmp_path / "src"), "--out", str(dest), "--engine", "ray", "--part-size", "10",
            "--chunk-size", "2"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "lida_plugin.cli", *args, "--ray-address", local_ray],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while not list(dest.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-3000:]
    partial = rows_by_path(dest)
    assert 0 < len(partial) < len(imgs) + 1 and set(partial.values()) == {1}
    assert main(args) == 1  # the rest, on the module's Ray; zz-broken.png (listed last) is an error row: exit 1
    t = read_results(dest)
    assert rows_by_path(dest) == Counter([str(p) for p in imgs] + [str(tmp_path / "src" / "zz-broken.png")])
    errors = [r for r in t.to_pylist() if r["status"] == "error"]
    assert len(errors) == 1 and "not an image" in errors[0]["error"]
