"""`lida verify`: states, exit codes, sidecars, our assertion decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from provenance_helpers import record_for, write_image

from lida_plugin.cli import EXIT_SETUP, main
from lida_plugin.keys import ROOT_CERT, init_keys, load_signing_config
from lida_plugin.manifest import ManifestWriter
from lida_plugin.verify import EXIT_INVALID, EXIT_NO_MANIFEST, EXIT_TRUSTED, EXIT_VALID, MAX_SIDE_BYTES


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    keys = init_keys(d / "keys")
    config = load_signing_config(keys)
    src = write_image(d / "in" / "a.jpg", "jpg")
    side_src = write_image(d / "in" / "s.png", "png")
    with ManifestWriter(config, mode="embed", out_dir=d / "out", model_sha256="cd" * 32) as w:
        assert w.apply(record_for(src))
    with ManifestWriter(config, mode="sidecar", model_sha256="cd" * 32) as w:
        assert w.apply(record_for(side_src, verdict="real"))
    return {"keys": keys, "embedded": d / "out" / "a.jpg", "plain": src, "sidecar_asset": side_src,
            "sidecar": d / "in" / "s.c2pa"}  # fmt: skip


def verify_json(capsys, *argv) -> tuple[int, dict]:
    rc = main(["verify", "--json", *map(str, argv)])
    return rc, json.loads(capsys.readouterr().out)


def test_trusted_with_our_anchor(signed, capsys):
    rc, r = verify_json(capsys, signed["embedded"], "--trust-anchor", signed["keys"] / ROOT_CERT)
    assert rc == EXIT_TRUSTED == 0 and r["state"] == "Trusted" and r["failure_codes"] == []
    a = r["lida_attribution"]
    assert a["version"] == 1 and a["verdict"] == "ai-generated" and a["generator"] == "sd-xl-turbo"
    assert a["model"]["sha256"] == "cd" * 32
    assert "assertion.dataHash.match" in r["codes"]["success"]


def test_valid_but_untrusted_without_anchor(signed, capsys):
    rc, r = verify_json(capsys, signed["embedded"])
    assert rc == EXIT_VALID and r["state"] == "Valid"
    assert r["failure_codes"] == ["signingCredential.untrusted"]
    assert main(["verify", "--allow-untrusted", str(signed["embedded"])]) == 0
    assert "not trusted" in capsys.readouterr().out


def test_env_trust_anchor(signed, capsys, monkeypatch):
    monkeypatch.setenv("LIDA_TRUST_ANCHOR", str(signed["keys"] / ROOT_CERT))
    assert verify_json(capsys, signed["embedded"])[0] == EXIT_TRUSTED


def test_sidecar_found_next_to_the_asset_and_given_explicitly(signed, capsys, tmp_path):
    anchor = signed["keys"] / ROOT_CERT
    rc, r = verify_json(capsys, signed["sidecar_asset"], "--trust-anchor", anchor)
    assert rc == EXIT_TRUSTED and r["manifest_source"] == "sidecar" and r["lida_attribution"]["verdict"] == "real"
    moved = tmp_path / "elsewhere.c2pa"
    moved.write_bytes(signed["sidecar"].read_bytes())
    copy = tmp_path / "s.png"
    copy.write_bytes(signed["sidecar_asset"].read_bytes())
    rc, r = verify_json(capsys, copy, "--sidecar", moved, "--trust-anchor", anchor)
    assert rc == EXIT_TRUSTED and r["sidecar"] == str(moved)


def test_invalid_after_tampering(signed, capsys, tmp_path):
    data = signed["embedded"].read_bytes()
    # the last bytes before JPEG EOI are entropy-coded pixels
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:])
    rc, r = verify_json(capsys, bad, "--trust-anchor", signed["keys"] / ROOT_CERT)
    assert rc == EXIT_INVALID and r["state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in r["failure_codes"]
    # text output names the failure
    assert main(["verify", str(bad)]) == EXIT_INVALID
    assert "assertion.dataHash.mismatch" in capsys.readouterr().out


def test_sidecar_for_a_changed_asset_is_invalid(signed, capsys, tmp_path):
    changed = tmp_path / "s.png"
    write_image(changed, "png", seed=7)
    rc, r = verify_json(capsys, changed, "--sidecar", signed["sidecar"])
    assert rc == EXIT_INVALID and "assertion.dataHash.mismatch" in r["failure_codes"]


def test_no_manifest(signed, capsys):
    rc, r = verify_json(capsys, signed["plain"])
    assert rc == EXIT_NO_MANIFEST and r["state"] is None


def test_setup_errors(signed, capsys, tmp_path):
    assert main(["verify", str(tmp_path / "nope.jpg")]) == EXIT_SETUP
    (tmp_path / "x.pem").write_text("not a cert")
    assert main(["verify", str(signed["embedded"]), "--trust-anchor", str(tmp_path / "x.pem")]) == EXIT_SETUP
    assert "not a PEM certificate" in capsys.readouterr().err


def test_a_sidecar_or_asset_that_is_not_a_regular_file_is_named_not_read(signed, capsys, tmp_path):
    """A FIFO given as --sidecar used to block for ever (and /dev/zero to fill memory); a folder or a FIFO
    given as the asset was 'no such file'."""
    import os

    fifo = tmp_path / "side.c2pa"
    os.mkfifo(fifo)
    for side in (fifo, Path("/dev/zero")):
        assert main(["verify", str(signed["sidecar_asset"]), "--sidecar", str(side)]) == EXIT_SETUP
        assert f"{side}: cannot read the sidecar: is not a regular file" in capsys.readouterr().err
    assert main(["verify", str(fifo)]) == EXIT_SETUP
    assert "is not a regular file (a FIFO, socket or device)" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == EXIT_SETUP
    assert f"{tmp_path}: is a folder, not a file" in capsys.readouterr().err
    big = tmp_path / "big.c2pa"
    with open(big, "wb") as f:
        f.truncate(MAX_SIDE_BYTES + 1)  # sparse: no disk used
    assert main(["verify", str(signed["sidecar_asset"]), "--sidecar", str(big)]) == EXIT_SETUP
    assert "more than a sidecar can be" in capsys.readouterr().err


def test_an_empty_or_text_file_is_named_as_not_an_image_not_as_altered(capsys, tmp_path):
    for name, data in (("e.png", b""), ("t.png", b"hello\n")):
        (tmp_path / name).write_bytes(data)
        assert main(["verify", str(tmp_path / name)]) == EXIT_SETUP  # was "Invalid", exit 5 ("altered")
        assert "not an image (Pillow cannot open it)" in capsys.readouterr().err


def test_corrupt_manifest_is_invalid_not_a_traceback(signed, capsys, tmp_path):
    data = bytearray(signed["embedded"].read_bytes())
    k = data.index(b"c2pa.signature") + 200
    data[k] ^= 0xFF
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(bytes(data))
    rc, r = verify_json(capsys, bad)
    assert rc == EXIT_INVALID and r["state"] == "Invalid" and r["error"]


def test_exit_codes_are_documented():
    from lida_plugin import verify

    for code in (EXIT_TRUSTED, EXIT_VALID, EXIT_INVALID, EXIT_NO_MANIFEST):
        assert f"* {code}:" in verify.__doc__
    assert Path(verify.__file__).name == "verify.py"
