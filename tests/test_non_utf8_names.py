"""A file name that is not valid UTF-8 (a Latin-1 ``café.png`` from an old archive): every command
analyses the file under its real name and writes the name as text with ``\\xHH`` for the undecodable
byte (``lida_plugin.textsafe.text_path``). It used to crash ``lida batch`` (Arrow), ``lida register``
and ``lida watch`` (SQLite; its test is in test_watch.py), fail manifests (c2pa) and put a lone
surrogate into JSON output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_png

from lida_plugin.cli import main
from lida_plugin.textsafe import text_path, utf8_safe

RAW = b"caf\xe9.png"  # Latin-1: not valid UTF-8


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "src"
    write_png(d / "good.png", "gen-a", 1)
    write_png(d / "x.png", "gen-b", 2)
    try:
        os.rename(d / "x.png", os.path.join(os.fsencode(d), RAW))
    except OSError:  # a file system that only takes UTF-8 names
        pytest.skip("this file system refuses names that are not UTF-8")
    return d


def odd(folder: Path) -> str:
    return os.fsdecode(os.path.join(os.fsencode(folder), RAW))


def test_text_path_escapes_only_the_undecodable_bytes():
    assert text_path(os.fsdecode(b"/a/" + RAW)) == "/a/caf\\xe9.png"
    assert text_path("/a/café.png") == "/a/café.png"  # valid UTF-8: unchanged
    rec = {"path": os.fsdecode(RAW), "neighbors": [{"generator": "g"}], "score": 0.5}
    assert utf8_safe(rec) == {"path": "caf\\xe9.png", "neighbors": [{"generator": "g"}], "score": 0.5}
    ok = {"path": "fine.png"}
    assert utf8_safe(ok) is ok  # the common case costs no copy


def test_attribute_json_and_register(isolated_env, folder, capsys):
    assert main(["attribute", "--jsonl", odd(folder)]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # strict UTF-8 (no lone surrogate)
    assert json.loads(out)["path"] == text_path(odd(folder)) and json.loads(out)["status"] == "ok"
    assert main(["register", "-g", "gen-x", odd(folder), str(folder / "good.png")]) == 0
    assert "2 exemplar(s) added" in capsys.readouterr().err
    assert main(["attribute", "--jsonl", odd(folder)]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["exact_match"]["generator"] == "gen-x"  # registered under its real bytes


def test_batch_writes_the_row_and_a_rerun_skips_it(isolated_env, folder, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    args = ["batch", str(folder), "--out", str(tmp_path / "out"), "--workers", "1"]
    assert main(args) == 0
    t = pq.read_table(tmp_path / "out")
    assert sorted(t.column("path").to_pylist()) == sorted([str(folder / "good.png"), text_path(odd(folder))])
    assert set(t.column("status").to_pylist()) == {"ok"}
    assert main(args) == 0  # resumes: the escaped name counts as done
    assert "0 to attribute" in capsys.readouterr().err
    assert pq.read_table(tmp_path / "out").num_rows == 2


def test_a_signed_sidecar_for_it(isolated_env, folder, tmp_path, capsys):
    from lida_plugin.keys import init_keys

    keys = init_keys(tmp_path / "keys")
    assert main(["attribute", "--jsonl", "--manifest", "sidecar", "--keys", str(keys), "--out", str(tmp_path / "o"),
                 odd(folder)]) == 0  # fmt: skip
    man = json.loads(capsys.readouterr().out)["manifest"]
    assert man["status"] == "ok", man
    assert main(["verify", odd(folder), "--sidecar", os.fsdecode(os.path.join(os.fsencode(tmp_path / "o"),
                 b"caf\xe9.c2pa")), "--trust-anchor", str(keys / "root-ca.pem")]) == 0  # fmt: skip
