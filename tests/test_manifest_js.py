"""Independent check: @trustnxt/c2pa-ts (pure TypeScript, not c2pa-rs) reads our embedded JPEG and PNG manifests.

Needs Node.js and ``npm ci`` in tests/js (``.ci/run`` does it). Skips locally when either is
missing; ``LIDA_REQUIRE_NODE=1`` (set in CI) turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from provenance_helpers import assertion, read_back, record_for, write_image

from lida_plugin.keys import init_keys, load_signing_config
from lida_plugin.manifest import ManifestWriter

JS = Path(__file__).resolve().parent / "js"
SCRIPT = JS / "read-manifest.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    missing = None
    if exe is None:
        missing = "node is not installed"
    elif not (JS / "node_modules" / "@trustnxt" / "c2pa-ts").is_dir():
        missing = f"run `npm ci` in {JS}"
    if missing:
        if os.environ.get("LIDA_REQUIRE_NODE") == "1":
            pytest.fail(f"LIDA_REQUIRE_NODE=1 but {missing}")
        pytest.skip(missing)
    return exe


def read_ts(node: str, path: Path) -> dict:
    r = subprocess.run([node, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=60, cwd=JS)
    assert r.stdout, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    d = tmp_path_factory.mktemp("js")
    config = load_signing_config(init_keys(d / "keys"))
    out = {}
    with ManifestWriter(config, mode="embed", out_dir=d / "out", model_sha256="ef" * 32, policy="action") as w:
        for ext in ("jpg", "png"):
            src = write_image(d / f"in.{ext}", ext)
            rec = record_for(src)
            assert w.apply(rec), rec["manifest"]
            out[ext] = Path(rec["manifest"]["path"])
        # a second pass: a chained manifest (prior one as parent ingredient)
        again = record_for(out["png"], verdict="real")
        w.out_dir = d / "out2"
        (d / "out2").mkdir()
        assert w.apply(again), again["manifest"]
        out["chained"] = Path(again["manifest"]["path"])
    return out


@pytest.mark.parametrize("kind", ["jpg", "png", "chained"])
def test_c2pa_ts_agrees_on_content_and_hashes(node, signed, kind):
    path = signed[kind]
    ts = read_ts(node, path)
    assert ts["error"] is None, ts
    assert ts["valid"] is True, ts["codes"]["failure"]
    assert "assertion.dataHash.match" in ts["codes"]["success"]
    state, _, store = read_back(path)
    assert state == "Valid"  # c2pa-python: untrusted signer (no anchor), everything else fine
    assert ts["active"] == store["active_manifest"]
    assert ts["manifests"] == len(store["manifests"])
    assert ts["assertion"] == assertion(store)  # the same decoded org.lida.attribution
    assert "c2pa.actions.v2" in ts["assertions"] and "org.lida.attribution" in ts["assertions"]


@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_c2pa_ts_sees_tampering_too(node, signed, kind, tmp_path):
    data = bytearray(signed[kind].read_bytes())
    if kind == "jpg":
        data[-10] ^= 0x01  # entropy-coded pixels just before EOI
    else:
        i = data.rindex(b"IDAT") + 40
        data[i] ^= 0x01  # a byte inside the compressed pixels
    bad = tmp_path / f"bad.{kind}"
    bad.write_bytes(bytes(data))
    ts = read_ts(node, bad)
    state, fails, _ = read_back(bad)
    assert state == "Invalid" and "assertion.dataHash.mismatch" in fails
    assert ts["valid"] is False
    assert "assertion.dataHash.mismatch" in ts["codes"]["failure"]
