"""Writing signed C2PA manifests: round trips, trust, tamper evidence, prior provenance, bad input."""

from __future__ import annotations

import errno
import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import c2pa
import jsonschema
import pytest
from provenance_helpers import (
    ASSERTION_SCHEMA,
    MIME,
    RESULT_SCHEMA,
    active,
    assertion,
    read_back,
    record_for,
    write_image,
)

from lida_plugin import manifest as manifest_mod
from lida_plugin.cli import EXIT_FILE_ERRORS, EXIT_OK, main
from lida_plugin.keys import ROOT_CERT, init_keys, load_signing_config
from lida_plugin.manifest import ManifestWriter
from lida_plugin.provenance import TRAINED

FORMATS = ["png", "jpg", "webp", "tif"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    return init_keys(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def config(keys):
    return load_signing_config(keys)


def writer(config, **kw) -> ManifestWriter:
    kw.setdefault("mode", "embed")
    return ManifestWriter(config, model_sha256="ab" * 32, **kw)


def sign(config, src: Path, out: Path | None, **kw) -> dict:
    rec = record_for(src, **kw.pop("rec", {}))
    with writer(config, out_dir=out, **kw) as w:
        ok = w.apply(rec)
    jsonschema.validate(rec, RESULT_SCHEMA)
    assert ok, rec["manifest"]
    return rec


@pytest.mark.parametrize("ext", FORMATS)
def test_embedded_round_trip(config, keys, tmp_path, ext):
    src = write_image(tmp_path / f"a.{ext}", ext)
    before = src.read_bytes()
    rec = sign(config, src, tmp_path / "out")
    m = rec["manifest"]
    assert m["kind"] == "embedded" and Path(m["path"]) == tmp_path / "out" / f"a.{ext}"
    assert src.read_bytes() == before  # never over the original
    state, fails, store = read_back(Path(m["path"]), anchor=keys / ROOT_CERT)
    assert state == "Trusted" and fails == []
    data = assertion(store)
    jsonschema.validate(data, ASSERTION_SCHEMA)
    assert data["verdict"] == "ai-generated" and data["generator"] == "sd-xl-turbo"
    assert data["digital_source_type"] == TRAINED
    assert data["model"] == {"id": "tiny-test-encoder", "sha256": "ab" * 32}
    assert data["detection"] == {"ai_score": 0.93, "threshold": 0.5}
    actions = assertion(store, "c2pa.actions.v2")["actions"]
    assert actions[0]["action"] == "c2pa.opened"
    assert "digitalSourceType" not in actions[0]  # default policy: in our assertion only
    assert active(store)["ingredients"][0]["relationship"] == "parentOf"
    # Valid, not Trusted, without the anchor
    state, fails, _ = read_back(Path(m["path"]))
    assert state == "Valid" and fails == ["signingCredential.untrusted"]


@pytest.mark.parametrize("ext", [*FORMATS, "bmp"])
def test_sidecar_round_trip_keeps_asset_byte_identical(config, keys, tmp_path, ext):
    src = write_image(tmp_path / f"b.{ext}", ext)
    before = src.read_bytes()
    rec = sign(config, src, None, mode="sidecar")
    m = rec["manifest"]
    assert m["kind"] == "sidecar" and Path(m["path"]) == tmp_path / "b.c2pa"
    assert src.read_bytes() == before
    side = Path(m["path"]).read_bytes()
    state, fails, store = read_back(src, sidecar=side, anchor=keys / ROOT_CERT)
    assert state == "Trusted", fails
    jsonschema.validate(assertion(store), ASSERTION_SCHEMA)


def test_unsupported_format_for_embedding_gets_a_sidecar_with_a_note(config, tmp_path):
    src = write_image(tmp_path / "c.bmp", "bmp")
    rec = sign(config, src, tmp_path / "out")
    m = rec["manifest"]
    assert m["kind"] == "sidecar" and m["path"].endswith("c.c2pa")
    assert any("cannot carry an embedded" in n for n in m["notes"])


@pytest.mark.parametrize("mode", ["embed", "sidecar"])
def test_one_changed_pixel_is_invalid_with_data_hash_mismatch(config, keys, tmp_path, mode):
    from PIL import Image

    src = write_image(tmp_path / "d.png", "png")
    rec = sign(config, src, tmp_path / "out", mode=mode)
    target = Path(rec["manifest"]["path"]) if mode == "embed" else src
    side = Path(rec["manifest"]["path"]).read_bytes() if mode == "sidecar" else None
    # rewrite the pixels with one changed, keeping the manifest chunk (embedded) as it is
    with Image.open(target) as im:
        px = im.convert("RGB")
    px.putpixel((3, 3), tuple((v + 1) % 256 for v in px.getpixel((3, 3))))
    if mode == "sidecar":
        px.save(target)
    else:
        import io

        buf = io.BytesIO()
        px.save(buf, format="PNG")
        # graft the original caBX chunk (the manifest) into the re-encoded PNG after IHDR
        orig = target.read_bytes()
        i = orig.index(b"caBX") - 4
        n = int.from_bytes(orig[i : i + 4], "big") + 12
        new = buf.getvalue()
        j = 8 + 25  # signature + IHDR chunk
        target.write_bytes(new[:j] + orig[i : i + n] + new[j:])
    state, fails, _ = read_back(target, sidecar=side, anchor=keys / ROOT_CERT)
    assert state == "Invalid"
    assert "assertion.dataHash.mismatch" in fails


def test_edited_assertion_is_invalid(config, keys, tmp_path):
    src = write_image(tmp_path / "e.jpg", "jpg")
    rec = sign(config, src, tmp_path / "out")
    out = Path(rec["manifest"]["path"])
    data = out.read_bytes()
    assert data.count(b"sd-xl-turbo") >= 1
    out.write_bytes(data.replace(b"sd-xl-turbo", b"midjourney!"))
    state, fails, _ = read_back(out, anchor=keys / ROOT_CERT)
    assert state == "Invalid"
    assert "assertion.hashedURI.mismatch" in fails


def test_prior_manifest_is_kept_as_parent_ingredient(config, keys, tmp_path):
    src = write_image(tmp_path / "f.png", "png")
    first = sign(config, src, tmp_path / "one")
    signed_once = Path(first["manifest"]["path"])
    second = sign(config, signed_once, tmp_path / "two", rec={"verdict": "real"})
    prov = second["provenance"]
    assert prov["status"] == "present" and prov["source"] == "embedded"
    assert prov["validation_state"] == "Trusted"
    assert prov["lida_attribution"]["verdict"] == "ai-generated"
    assert prov["comparison"]["agrees"] is False  # the earlier attribution said ai-generated
    assert second["manifest"]["parent"] == "prior manifest kept as the parent ingredient"
    state, fails, store = read_back(Path(second["manifest"]["path"]), anchor=keys / ROOT_CERT)
    assert state == "Trusted", fails
    assert len(store["manifests"]) == 2
    parent = active(store)["ingredients"][0]
    assert parent["relationship"] == "parentOf"
    assert parent["active_manifest"] == first["manifest"]["active_manifest"]


def _foreign_manifest(config, src: Path, dst: Path, source_type: str, agent: str) -> Path:
    """Sign ``src`` as another tool would: c2pa.created with a digital source type and a software agent."""
    man = {
        "claim_generator_info": [{"name": agent}],
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": {"name": agent}}]}}],
    }  # fmt: skip
    from lida_plugin.keys import make_signer

    signer = make_signer(config)
    with open(src, "rb") as s, open(dst, "w+b") as d, c2pa.Builder(man) as b:
        b.sign(signer, MIME[src.suffix[1:]], s, d)
    signer.close()
    return dst


def test_disagreement_with_a_declared_capture_is_surfaced(config, tmp_path):
    src = write_image(tmp_path / "g.jpg", "jpg")
    camera = _foreign_manifest(
        config, src, tmp_path / "camera.jpg", "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture", "CamX"
    )
    rec = sign(config, camera, tmp_path / "out")
    cmp_ = rec["provenance"]["comparison"]
    assert rec["provenance"]["digital_source_types"] == [
        "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    ]
    assert cmp_["agrees"] is False and "declares a capture" in cmp_["detail"]


def test_claimed_generator_is_reported_and_compared(config, tmp_path):
    src = write_image(tmp_path / "h.png", "png")
    ai = _foreign_manifest(config, src, tmp_path / "ai.png", TRAINED, "Midjourney v7")
    rec = sign(config, ai, tmp_path / "out")
    prov = rec["provenance"]
    assert prov["declares_ai"] is True and prov["declared_generator"] == "Midjourney v7"
    assert prov["comparison"]["agrees"] is False and "Midjourney v7" in prov["comparison"]["detail"]
    agree = sign(config, ai, tmp_path / "out2", rec={"generator": "midjourney-v7"})
    assert agree["provenance"]["comparison"]["agrees"] is True


def test_corrupt_prior_manifest_is_reported_not_fatal(config, keys, tmp_path):
    src = write_image(tmp_path / "i.png", "png")
    first = sign(config, src, tmp_path / "one")
    data = bytearray(Path(first["manifest"]["path"]).read_bytes())
    k = data.index(b"c2pa.signature") + 200
    data[k] ^= 0xFF
    # keep the PNG chunk CRC right, so the image still decodes and only the manifest is broken
    i = data.index(b"caBX") - 4
    n = int.from_bytes(data[i : i + 4], "big")
    data[i + 8 + n : i + 12 + n] = zlib.crc32(bytes(data[i + 4 : i + 8 + n])).to_bytes(4, "big")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(bytes(data))
    rec = sign(config, bad, tmp_path / "two")
    assert rec["provenance"]["status"] == "corrupt" and rec["provenance"]["error"]
    assert rec["manifest"]["status"] == "ok"
    assert any("could not be parsed" in n for n in rec["manifest"]["notes"])
    state, _, _ = read_back(Path(rec["manifest"]["path"]), anchor=keys / ROOT_CERT)
    assert state == "Trusted"
    assert bad.read_bytes() == bytes(data)


def test_source_type_policy_action(config, tmp_path):
    src = write_image(tmp_path / "j.png", "png")
    rec = sign(config, src, tmp_path / "out", policy="action")
    _, _, store = read_back(Path(rec["manifest"]["path"]))
    assert assertion(store, "c2pa.actions.v2")["actions"][0]["digitalSourceType"] == TRAINED
    assert rec["manifest"]["source_type_on_action"] is True
    # action-attributed: an unregistered (open-set) generator keeps it off the action
    rec = sign(config, src, tmp_path / "out2", policy="action-attributed", rec={"generator": None})
    _, _, store = read_back(Path(rec["manifest"]["path"]))
    assert "digitalSourceType" not in assertion(store, "c2pa.actions.v2")["actions"][0]
    assert assertion(store)["digital_source_type"] == TRAINED
    # never for a real verdict
    rec = sign(config, src, tmp_path / "out3", policy="action", rec={"verdict": "real"})
    _, _, store = read_back(Path(rec["manifest"]["path"]))
    assert "digitalSourceType" not in assertion(store, "c2pa.actions.v2")["actions"][0]
    assert assertion(store)["digital_source_type"] is None


def test_in_place_replaces_atomically_and_keeps_a_backup(config, keys, tmp_path):
    src = write_image(tmp_path / "k.jpg", "jpg")
    before = src.read_bytes()
    rec = sign(config, src, None, in_place=True)
    m = rec["manifest"]
    assert Path(m["path"]) == src and Path(m["backup"]) == tmp_path / "k.jpg.lida-bak"
    assert Path(m["backup"]).read_bytes() == before
    state, _, _ = read_back(src, anchor=keys / ROOT_CERT)
    assert state == "Trusted"
    assert not list(tmp_path.glob(".*lida-tmp*"))


def test_embedding_over_the_original_needs_in_place(config, tmp_path):
    src = write_image(tmp_path / "l.png", "png")
    before = src.read_bytes()
    rec = record_for(src)
    with writer(config, out_dir=tmp_path) as w:
        assert not w.apply(rec)
    assert "--in-place" in rec["manifest"]["error"]
    assert src.read_bytes() == before


def _check_untouched(rec, src, before, out: Path):
    assert rec["manifest"]["status"] == "error" and rec["manifest"]["original_untouched"]
    jsonschema.validate(rec, RESULT_SCHEMA)
    assert src.read_bytes() == before
    assert not [p for p in out.iterdir() if p.name != src.name or out != src.parent] if out.exists() else True


def test_read_only_destination(config, tmp_path, monkeypatch):
    src = write_image(tmp_path / "m.png", "png")
    before = src.read_bytes()

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(manifest_mod, "_open_temp", denied)
    rec = record_for(src)
    with writer(config, out_dir=tmp_path / "out") as w:
        assert not w.apply(rec)
    assert "not writable" in rec["manifest"]["error"]
    _check_untouched(rec, src, before, tmp_path / "out")


class _FullDisk:
    """A destination file that fills up after a few bytes."""

    def __init__(self, path, room=1000):
        self.f = open(path, "x+b")  # noqa: SIM115
        self.room = room

    def write(self, b):
        if self.f.tell() + len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("mode", ["embed", "sidecar"])
def test_disk_full(config, tmp_path, monkeypatch, mode):
    src = write_image(tmp_path / "n.png", "png")
    before = src.read_bytes()
    monkeypatch.setattr(manifest_mod, "_open_temp", lambda p: _FullDisk(p))
    rec = record_for(src)
    out = tmp_path / "out"
    with writer(config, out_dir=out, mode=mode) as w:
        assert not w.apply(rec)
    assert "disk full" in rec["manifest"]["error"]
    _check_untouched(rec, src, before, out)
    assert list(out.iterdir()) == []  # the partial temporary file is gone


def test_file_changing_while_signed(config, tmp_path, monkeypatch):
    src = write_image(tmp_path / "o.png", "png")
    real_sign = c2pa.Builder.sign

    def sign_and_touch(self, *a, **kw):
        out = real_sign(self, *a, **kw)
        with open(src, "ab") as f:
            f.write(b"\0")
        return out

    monkeypatch.setattr(c2pa.Builder, "sign", sign_and_touch)
    rec = record_for(src)
    with writer(config, out_dir=tmp_path / "out") as w:
        assert not w.apply(rec)
    assert "changed while it was being signed" in rec["manifest"]["error"]
    assert list((tmp_path / "out").iterdir()) == []


def test_file_changed_after_analysis(config, tmp_path):
    src = write_image(tmp_path / "p.png", "png")
    rec = record_for(src)
    write_image(src, "png", seed=99)
    with writer(config, out_dir=tmp_path / "out") as w:
        assert not w.apply(rec)
    assert "changed after it was analysed" in rec["manifest"]["error"]


def test_sidecar_for_an_asset_with_an_embedded_manifest_is_refused_clearly(config, tmp_path):
    src = write_image(tmp_path / "q.png", "png")
    signed = Path(sign(config, src, tmp_path / "one")["manifest"]["path"])
    rec = record_for(signed)
    with writer(config, mode="sidecar", out_dir=tmp_path / "side") as w:
        assert not w.apply(rec)
    assert "--manifest embed" in rec["manifest"]["error"]
    assert list((tmp_path / "side").iterdir()) == []


def test_same_output_name_twice_in_one_run(config, tmp_path):
    a = write_image(tmp_path / "x" / "r.png", "png")
    b = write_image(tmp_path / "y" / "r.png", "png", seed=2)
    with writer(config, out_dir=tmp_path / "out") as w:
        assert w.apply(record_for(a))
        rec = record_for(b)
        assert not w.apply(rec)
        assert "already written" in rec["manifest"]["error"]
        w.forget_claims()  # what a long-running service does before writing an asset again
        assert w.apply(record_for(b))


def test_a_file_of_the_users_in_out_is_kept_and_an_earlier_signed_copy_replaced(config, tmp_path):
    """A signed copy written over a file in --out that lida did not make keeps that file as .lida-bak (it
    used to be replaced silently); a signed copy from an earlier run is replaced without one."""
    src = write_image(tmp_path / "in" / "r.png", "png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.png").write_text("my precious notes")
    with writer(config, out_dir=out) as w:
        rec = record_for(src)
        assert w.apply(rec), rec["manifest"]
    backup = Path(rec["manifest"]["backup"])
    assert backup == out / "r.png.lida-bak" and backup.read_text() == "my precious notes"
    with writer(config, out_dir=out) as w:  # a rerun: the signed copy in out is lida's own
        rec = record_for(src)
        assert w.apply(rec), rec["manifest"]
    assert "backup" not in rec["manifest"] and sorted(p.name for p in out.iterdir()) == ["r.png", "r.png.lida-bak"]


def test_shared_signer_from_several_threads(config, keys, tmp_path):
    srcs = [write_image(tmp_path / f"t{i}.{ext}", ext, seed=i) for i, ext in enumerate(FORMATS * 2)]
    with writer(config, out_dir=tmp_path / "out") as w:
        recs = [record_for(s) for s in srcs]
        with ThreadPoolExecutor(4) as pool:
            oks = list(pool.map(w.apply, recs))
    assert all(oks), [r["manifest"] for r in recs]
    for r in recs:
        state, _, store = read_back(Path(r["manifest"]["path"]), anchor=keys / ROOT_CERT)
        assert state == "Trusted"
        assert assertion(store)["asset_sha256"] == r["image"]["sha256"]


# -- through the CLI ------------------------------------------------------------------------------
def test_cli_attribute_embed_and_sidecar(isolated_env, images, keys, tmp_path, capsys):
    assert main(["register", "-g", "gen-a", "-f", "fam-a", *map(str, images["gen-a"][:2])]) == EXIT_OK
    capsys.readouterr()
    paths = [str(images["gen-a"][2]), str(images["real"][0])]
    out = tmp_path / "signed"
    rc = main(["attribute", "--json", *paths, "--manifest", "embed", "--out", str(out), "--keys", str(keys),
               "--source-type-policy", "action-attributed"])  # fmt: skip
    assert rc == EXIT_OK
    recs = json.loads(capsys.readouterr().out)
    for r in recs:
        jsonschema.validate(r, RESULT_SCHEMA)
        assert r["manifest"]["status"] == "ok" and r["manifest"]["validation_state"] == "Trusted"
        assert r["provenance"]["status"] == "none"
    _, _, store = read_back(out / images["gen-a"][2].name)
    data = assertion(store)
    assert data["verdict"] == "ai-generated" and data["generator"] == "gen-a" and data["family"] == "fam-a"
    assert data["store_id"] == recs[0]["store_id"] and len(data["model"]["sha256"]) == 64
    assert assertion(store, "c2pa.actions.v2")["actions"][0]["digitalSourceType"] == TRAINED
    _, _, store = read_back(out / images["real"][0].name)
    assert assertion(store)["verdict"] == "real"

    rc = main(["attribute", "--jsonl", paths[0], "--manifest", "sidecar", "--keys", str(keys)])
    assert rc == EXIT_OK
    rec = json.loads(capsys.readouterr().out)
    assert rec["manifest"]["path"] == str(images["gen-a"][2].with_suffix(".c2pa"))


def test_cli_manifest_failure_is_a_per_file_error(isolated_env, images, keys, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(manifest_mod, "_open_temp", lambda p: _FullDisk(p, room=10))
    src = images["real"][0]
    before = src.read_bytes()
    rc = main(
        ["attribute", "--jsonl", str(src), "--manifest", "embed", "--out", str(tmp_path / "o"), "--keys", str(keys)]
    )
    assert rc == EXIT_FILE_ERRORS
    cap = capsys.readouterr()
    rec = json.loads(cap.out)
    assert rec["status"] == "ok" and rec["verdict"] == "real"  # the finding itself is kept
    assert rec["manifest"]["status"] == "error" and "disk full" in rec["manifest"]["error"]
    assert "Traceback" not in cap.err and "manifest not written" in caplog.text
    assert src.read_bytes() == before


@pytest.mark.parametrize(
    "argv",
    [
        ["--manifest", "embed"],
        ["--manifest", "embed", "--out", "x", "--in-place"],
        ["--manifest", "sidecar", "--in-place"],
        ["--in-place"],
    ],
)
def test_cli_usage_errors(isolated_env, images, keys, argv):
    with pytest.raises(SystemExit) as e:
        main(["attribute", str(images["real"][0]), "--keys", str(keys), *argv])
    assert e.value.code == 2


def test_plugin_assertions_are_signed_after_ours(config, tmp_path):
    import pluggy

    from lida_plugin.manager import new_plugin_manager

    hookimpl = pluggy.HookimplMarker("lida_plugin")

    class Ingest:
        @hookimpl
        def lida_manifest_assertions(self, path, record, manifest):
            assert manifest["assertions"][1]["label"] == "org.lida.attribution"
            return [{"label": "org.example.ingest", "data": {"desk": "photo", "asset": Path(path).name}},
                    {"label": "org.lida.fake", "data": {}}]  # fmt: skip

    pm = new_plugin_manager()  # handed to the writer: the one whose plugins are asked, no global fallback
    pm.register(Ingest(), name="test-ingest")
    src = write_image(tmp_path / "u.png", "png")
    rec = sign(config, src, tmp_path / "out", pm=pm)
    _, _, store = read_back(Path(rec["manifest"]["path"]))
    labels = [a["label"] for a in active(store)["assertions"]]
    assert assertion(store, "org.example.ingest") == {"desk": "photo", "asset": "u.png"}
    assert labels.index("org.example.ingest") > labels.index("org.lida.attribution")
    assert "org.lida.fake" not in labels  # reserved labels are dropped by the manager


def test_unexpected_failure_is_still_a_per_file_error(config, tmp_path, monkeypatch):
    src = write_image(tmp_path / "v.png", "png")
    before = src.read_bytes()

    def boom(*a, **kw):
        raise RuntimeError("surprise")

    monkeypatch.setattr(manifest_mod, "build_manifest", boom)
    rec = record_for(src)
    with writer(config, out_dir=tmp_path / "out") as w:
        assert not w.apply(rec)
    assert rec["manifest"]["status"] == "error" and "surprise" in rec["manifest"]["error"]
    jsonschema.validate(rec, RESULT_SCHEMA)
    assert src.read_bytes() == before


def test_out_dir_that_cannot_be_created_is_a_setup_error(isolated_env, images, keys, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["attribute", str(images["real"][0]), "--manifest", "embed", "--out", str(blocker / "sub"),
               "--keys", str(keys)])  # fmt: skip
    assert rc == 3 and "cannot create it" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["embed", "sidecar"])
def test_large_file_is_streamed_not_loaded(config, keys, tmp_path, mode):
    import tracemalloc

    import numpy as np
    from PIL import Image

    src = tmp_path / "big.tif"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (2400, 2400, 3), dtype=np.uint8)).save(src)  # ~17 MB, uncompressed
    size = src.stat().st_size
    rec = record_for(src)
    with writer(config, out_dir=tmp_path / "out", mode=mode) as w:
        tracemalloc.start()
        try:
            assert w.apply(rec), rec["manifest"]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < size / 4, f"peak Python allocation {peak} for a {size}-byte file"
    out = Path(rec["manifest"]["path"])
    state, _, _ = read_back(src if mode == "sidecar" else out, sidecar=out.read_bytes() if mode == "sidecar" else None,
                            anchor=keys / ROOT_CERT)  # fmt: skip
    assert state == "Trusted"
