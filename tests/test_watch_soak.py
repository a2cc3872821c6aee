"""The short soak: ``benchmarks/watch_soak.py`` against the real ``lida watch`` (the long run: docs/watch.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_soak_200_files_one_sigkill_loses_and_doubles_nothing(tmp_path, tiny_model):
    spec = importlib.util.spec_from_file_location("watch_soak", REPO / "benchmarks" / "watch_soak.py")
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    out = tmp_path / "soak.json"
    rc = soak.main(["--files", "200", "--minutes", "0.25", "--kills", "1", "--model", str(tiny_model),
                    "--size", "64", "--settle", "0.5", "--rescan", "3", "--rss-every", "0.5",
                    "--drain-timeout", "60", "--workdir", str(tmp_path / "work"), "--json", str(out)])  # fmt: skip
    r = json.loads(out.read_text())
    assert r["kills"] == 1 and r["watcher_runs"] == 2
    assert r["lost"] == 0, r["lost_files"]
    assert r["doubled"] == 0, r["doubled_files"]
    assert r["drained"] and r["final_exit_code"] == 0
    assert r["reports_out"] == r["files_in"] > 150
    assert r["quarantined"] == r["bad_files"] > 0
    assert r["duplicates"] > 0 and all(r["by_writer"][h] > 0 for h in ("copy", "rename", "slow", "reopen", "deleted"))
    assert r["rss_mib"]["samples"] > 5
    assert rc == 0
