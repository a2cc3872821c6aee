import dataclasses
import sqlite3
import threading

import numpy as np
import pytest
from conftest import build_tiny_model, tiny_info

from lida_plugin.decode import decode_file
from lida_plugin.encoder import Encoder
from lida_plugin.errors import StoreError
from lida_plugin.store import ExemplarStore, StoreStack


@pytest.fixture
def enc(tiny_model):
    return Encoder(tiny_model, device="cpu", threads=1)


def test_register_is_idempotent_and_transactional(tmp_path, enc, images):
    path = tmp_path / "s.sqlite"
    with ExemplarStore(path, create=True) as s:
        d = decode_file(images["gen-a"][0])
        assert s.register(enc, d, "gen-a", "fam-a") is True
        assert s.register(enc, d, "gen-a", "fam-a") is False
        assert s.exemplar_count() == 1
        with pytest.raises(StoreError, match="already registered .* as generator 'gen-a'"):
            s.register(enc, d, "gen-b")
        assert s.exemplar_count() == 1
        assert [(g.name, g.family, g.exemplars) for g in s.generators()] == [("gen-a", "fam-a", 1)]
        assert s.model_id == enc.model_id


def test_same_image_under_another_name_is_still_a_noop(tmp_path, enc, images):
    src = images["gen-a"][0]
    copy = tmp_path / "renamed.png"
    copy.write_bytes(src.read_bytes())
    with ExemplarStore(tmp_path / "s.sqlite", create=True) as s:
        assert s.register(enc, decode_file(src), "gen-a")
        assert not s.register(enc, decode_file(copy), "gen-a")


@pytest.mark.parametrize("keep", ["lowbits", "raw"])
def test_store_of_another_model_is_refused_then_reembedded(tmp_path, enc, images, keep):
    path = tmp_path / "s.sqlite"
    with ExemplarStore(path, create=True, keep=keep) as s:
        for p in images["gen-a"]:
            s.register(enc, decode_file(p), "gen-a")
        old = s.exemplars().embeddings.copy()
    other_model = build_tiny_model(tmp_path / "other.onnx", tiny_info(model_id="other-model"), seed=7)
    other = Encoder(other_model, device="cpu")
    with ExemplarStore(path) as s:
        with pytest.raises(StoreError, match="lida store reembed"):
            StoreStack([s], other)
        assert s.reembed(other) == 3
        assert s.model_id == "other-model"
        new = s.exemplars().embeddings
    assert not np.allclose(old, new)
    # re-embedding from stored (low-bit or raw) crops equals embedding the original images
    direct = other.embed_crop_sets([other.crops_for(decode_file(p)) for p in images["gen-a"]])
    np.testing.assert_allclose(new, direct, atol=1e-5)
    backups = list(tmp_path.glob("s.sqlite.bak-*"))
    assert len(backups) == 1
    with ExemplarStore(backups[0], readonly=True) as b:
        assert b.model_id == enc.model_id


def test_readonly_store_refuses_writes(tmp_path, enc, images):
    path = tmp_path / "s.sqlite"
    ExemplarStore(path, create=True).close()
    with ExemplarStore(path, readonly=True) as s, pytest.raises(StoreError, match="read-only"):
        s.register(enc, decode_file(images["gen-a"][0]), "gen-a")


def test_not_a_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match="not a readable lida store"):
        ExemplarStore(bad)
    with pytest.raises(StoreError, match="does not exist"):
        ExemplarStore(tmp_path / "missing.sqlite")


def test_export_and_import_between_stores(tmp_path, enc, images):
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with ExemplarStore(a, create=True) as s:
        for p in images["gen-a"] + images["gen-b"]:
            s.register(enc, decode_file(p), p.name.split("-")[0] + "-" + p.name.split("-")[1], "fam")
        s.backup_to(tmp_path / "export.sqlite")
        with pytest.raises(StoreError, match="not overwriting"):
            s.backup_to(tmp_path / "export.sqlite")
    with ExemplarStore(tmp_path / "export.sqlite", readonly=True) as src, ExemplarStore(b, create=True) as dst:
        assert dst.import_from(src, enc, {"gen-b"}) == (3, 0)
        assert dst.import_from(src, enc) == (3, 3)
        assert sorted(g.name for g in dst.generators()) == ["gen-a", "gen-b"]


def test_concurrent_writers_do_not_lose_registrations(tmp_path, enc, images):
    path = tmp_path / "s.sqlite"
    ExemplarStore(path, create=True).close()
    errors = []

    def work(paths, name):
        try:
            with ExemplarStore(path) as s:
                for p in paths:
                    s.register(enc, decode_file(p), name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(images[k], k)) for k in ("gen-a", "gen-b", "gen-d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT COUNT(*) FROM exemplars").fetchone()[0] == 9


def test_remove_generator_keeps_a_backup(tmp_path, enc, images):
    path = tmp_path / "s.sqlite"
    with ExemplarStore(path, create=True) as s:
        for p in images["gen-a"]:
            s.register(enc, decode_file(p), "gen-a")
        s.register(enc, decode_file(images["gen-b"][0]), "gen-b")
        assert s.remove_generator("gen-a") == 3
        assert [g.name for g in s.generators()] == ["gen-b"]
        with pytest.raises(StoreError, match="no generator 'gen-a'"):
            s.remove_generator("gen-a")
    (backup,) = tmp_path.glob("s.sqlite.bak-*")
    with ExemplarStore(backup, readonly=True) as b:
        assert b.exemplar_count() == 4


def test_compacted_store_opens_immutable(tmp_path, enc, images):
    path = tmp_path / "s.sqlite"
    with ExemplarStore(path, create=True) as s:
        s.register(enc, decode_file(images["gen-a"][0]), "gen-a")
        s.compact()
    assert not (tmp_path / "s.sqlite-wal").exists()
    path.chmod(0o444)
    with ExemplarStore(path, immutable=True) as s:
        assert s.exemplar_count() == 1 and s.readonly


def test_input_resize_model_crops_the_resized_image_and_store_refuses_to_mix_grids(tmp_path, enc, images):
    """A model declaring lida.input_resize (the authors' configuration) sees the image resized;
    crops a store kept from the native grid must not be re-embedded for it, nor the reverse."""
    from lida_plugin.contract import parse_metadata
    from lida_plugin.fingerprint import resize_square

    info = tiny_info(model_id="resize-model", input_resize=96)
    assert parse_metadata(info.to_metadata()).input_resize == 96
    assert parse_metadata(tiny_info().to_metadata()).input_resize == 0  # absent key: native grid
    rz = Encoder(build_tiny_model(tmp_path / "rz.onnx", info), device="cpu")
    d = decode_file(images["gen-a"][0])
    assert d.pixels.shape[:2] != (96, 96)
    got = rz.crops_for(d)
    want = enc.crops_for(dataclasses.replace(d, pixels=resize_square(d.pixels, 96)))
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, enc.crops_for(d))

    path = tmp_path / "s.sqlite"
    with ExemplarStore(path, create=True, keep="lowbits") as s:
        s.register(enc, d, "gen-a")
        with pytest.raises(StoreError, match="native pixel grid.*resized to 96px.*register the original"):
            s.reembed(rz)
        assert s.model_id == enc.model_id  # nothing changed
    with ExemplarStore(tmp_path / "r.sqlite", create=True, keep="lowbits") as r:
        r.register(rz, d, "gen-a")
        with ExemplarStore(tmp_path / "n.sqlite", create=True) as n, pytest.raises(StoreError, match="resized to 96px"):
            n.import_from(r, enc)
