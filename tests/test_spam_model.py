"""The residual-statistics model: the ONNX graph against the numpy reference, the fitted map and
detection head, the contract's version-2 keys, and the store refusing low-bit crops for it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import tiny_info, write_two_generator_corpus

from lida_plugin.contract import ContractError, parse_metadata
from lida_plugin.detect import ai_scores, calibrate_threshold, detect
from lida_plugin.residual import spam_dim

pytest.importorskip("onnxruntime")
sm = pytest.importorskip("lida_exporters.spam_model")

R = sm.SpamRecipe(crop=32, crop_count=4, pca_dim=24, dim=8, colour=False)


def _crops(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 256, (n, 3, R.crop, R.crop), dtype=np.uint8)
    yy, xx = np.mgrid[0 : R.crop, 0 : R.crop]
    c[0] = 100  # flat: every difference 0
    c[1] = ((xx + 2 * yy) % 256).astype(np.uint8)  # ramps: clipped and unclipped steps
    c[2, :, :, :] = rng.integers(120, 124, (3, R.crop, R.crop), dtype=np.uint8)  # small noise
    return c


@pytest.mark.parametrize("colour", [False, True], ids=["rgb", "rgb+colour-differences"])
def test_graph_features_match_numpy_reference(colour):
    r = sm.SpamRecipe(crop=32, crop_count=4, pca_dim=24, dim=8, colour=colour)
    crops = _crops(6)
    crops[3, 0] = 255  # saturated red next to dark green/blue: colour differences far beyond T
    crops[3, 1:] = np.random.default_rng(9).integers(0, 4, (2, r.crop, r.crop), dtype=np.uint8)
    sess = sm.spam_graph_features(r)
    got = sess.run(["spam"], {"crops": crops})[0]
    ref = sm.crop_features(crops, r.T, colour)
    assert got.shape == (6, spam_dim(r.T, colour)) and np.abs(got - ref).max() < 1e-6
    if colour:  # the RGB part is the plain SPAM, the rest the R-G and B-G channels
        assert np.array_equal(ref[:, : spam_dim(r.T)], sm.crop_features(crops, r.T))
        assert np.abs(ref[:, spam_dim(r.T) :]).sum() > 0


def test_fitted_map_and_exported_graph_agree():
    rng = np.random.default_rng(1)
    crops = _crops(40, seed=2)
    feats = sm.crop_features(crops, R.T)
    labels = [f"c{i % 4}" for i in range(len(crops))]
    mean, proj = sm.fit_map(feats, labels, R)
    assert mean.shape == (spam_dim(),) and proj.shape == (spam_dim(), R.dim) and np.isfinite(proj).all()
    import onnxruntime as ort

    model = sm.build_graph(mean, proj, R)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = crops[rng.permutation(len(crops))[:7]]
    got = sess.run(["embedding"], {"crops": batch})[0]
    ref = sm.apply_map(sm.crop_features(batch, R.T), mean, proj)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() < 1e-4


def test_head_separates_and_calibrates():
    rng = np.random.default_rng(3)
    d = 8
    real = rng.standard_normal((60, d)) + np.r_[2.0, np.zeros(d - 1)]
    fake = rng.standard_normal((40, d)) - np.r_[2.0, np.zeros(d - 1)]
    x = np.vstack([real, fake])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.r_[np.zeros(60), np.ones(40)]
    head = sm.fit_head(x, y)
    info = tiny_info(embedding_dim=d, real_prototype=tuple([1.0] + [0.0] * (d - 1)), detection_head=head)
    s, _ = ai_scores(x, info)
    assert s[y == 1].mean() > 0.8 > 0.2 > s[y == 0].mean()
    t = calibrate_threshold(s[y == 0], 0.05)
    assert (s[y == 0] >= t).mean() <= 0.05
    dets = detect(x[:3], info)
    assert [d_.ai_score for d_ in dets] == pytest.approx(s[:3].tolist())


def test_contract_version_two_round_trip_and_refusals():
    d = 24
    head = {"kind": "logistic", "version": 1, "input": "image_embedding", "w": [0.1] * d, "b": -0.5}
    info = tiny_info(detection_head=head, input_bits=8)
    meta = info.to_metadata()
    assert meta["lida.contract_version"] == "2" and meta["lida.input_bits"] == "8"
    back = parse_metadata(meta)
    assert back.detection_head == head and back.input_bits == 8
    old = tiny_info().to_metadata()  # no head: still version 1, no new keys, 3 bits
    assert old["lida.contract_version"] == "1" and "lida.input_bits" not in old
    assert parse_metadata(old).input_bits == 3 and parse_metadata(old).detection_head == {}
    assert parse_metadata(tiny_info(fingerprint_mode="rgb").to_metadata()).input_bits == 8
    with pytest.raises(ContractError, match="needs contract version 2"):
        parse_metadata({**meta, "lida.contract_version": "1"})
    with pytest.raises(ContractError, match="'w' must be 24 numbers"):
        parse_metadata({**meta, "lida.detection_head": '{"kind": "logistic", "version": 1, "w": [1], "b": 0}'})
    with pytest.raises(ContractError, match="version 9"):
        parse_metadata({**meta, "lida.detection_head": '{"kind": "logistic", "version": 9, "w": [], "b": 0}'})
    with pytest.raises(ContractError, match="input_bits 5"):
        parse_metadata({**meta, "lida.input_bits": "5"})
    with pytest.raises(ContractError, match="reads 'vX'|this runtime reads"):
        parse_metadata({**meta, "lida.contract_version": "3"})
    assert "lida.detection_fpr_confidence" not in meta and back.detection_confidence == 0.0
    conf = tiny_info(detection_head=head, input_bits=8, detection_confidence=0.9).to_metadata()
    assert parse_metadata(conf).detection_confidence == 0.9
    with pytest.raises(ContractError, match="detection_fpr_confidence"):
        parse_metadata({**conf, "lida.detection_fpr_confidence": "1.5"})


class _Enc:
    """Just enough of an Encoder for the store's model checks."""

    def __init__(self, info):
        self.info = info
        self.model_id = info.model_id

    def embed_crop_sets(self, sets):  # pragma: no cover - must never be reached for an 8-bit model
        raise AssertionError("low-bit crops were fed to an 8-bit model")


def test_store_refuses_lowbit_crops_for_an_eight_bit_model(tmp_path):
    from conftest import write_png

    from lida_plugin.decode import decode_file
    from lida_plugin.errors import StoreError
    from lida_plugin.store import ExemplarStore

    low = _Enc(tiny_info())
    full = _Enc(tiny_info(model_id="spam-like", fingerprint_mode="rgb"))
    dec = decode_file(write_png(tmp_path / "a.png", "gen-a", 1))
    crops = np.zeros((4, 3, 32, 32), np.uint8)
    with ExemplarStore(tmp_path / "s.sqlite", create=True, keep="lowbits") as st:  # low-bit crops kept
        st.register(low, dec, "gen-a", crops=crops, embedding=np.ones(24, np.float32) / np.sqrt(24))
        with pytest.raises(StoreError, match="lowbits crops; it needs raw crops.*register them again"):
            st.reembed(full, backup=False)
        with pytest.raises(StoreError, match="lowbits crops; it needs raw crops.*register them again"):
            st.check_model(full)
        with ExemplarStore(tmp_path / "t.sqlite", create=True) as dst, pytest.raises(StoreError, match="raw crops"):
            dst.import_from(st, full)
    assert not list(tmp_path.glob("s.sqlite.bak-*"))  # refused before any backup was written


def test_open_set_threshold_as_a_stated_rate():
    from lida_exporters.export import open_set_threshold
    from lida_plugin.detect import fpr_upper_bound

    ang = np.radians([0, 10, 40, 45, 90, 100])  # three classes of two, on the unit circle
    emb = np.stack([np.cos(ang), np.sin(ang)], 1)
    labels = ["a", "a", "b", "b", "c", "c"]
    # leave-one-out best match of another class: 40, 30, 30, 35, 45, 55 degrees away
    unknown = np.cos(np.radians([40, 30, 30, 35, 45, 55]))
    t, stats = open_set_threshold(emb, labels, max_unknown_accept=0.05, confidence=0.9)
    # six negatives cannot bound a 5% rate at 90% even with none accepted: just above the best of them
    assert t == pytest.approx(unknown.max()) and stats["unknown_reject"] == 1.0 and stats["known_accept"] == 1.0
    # 70% at confidence 0.5: bounds for k = 3, 4 of 6 are 0.58 and 0.74, so 3 may reach it
    assert fpr_upper_bound(3, 6, 0.5) <= 0.7 < fpr_upper_bound(4, 6, 0.5)
    t2, s2 = open_set_threshold(emb, labels, max_unknown_accept=0.7, confidence=0.5)
    assert t2 == pytest.approx(np.cos(np.radians(35))) and s2["unknown_reject"] == 0.5
    t0, s0 = open_set_threshold(emb, labels)  # the balanced-accuracy rule, unchanged
    assert s0["balanced_accuracy"] == 1.0 and s0["unknown_reject"] == 1.0


def test_recipe_fields_added_later_leave_the_model_id_alone_at_their_defaults():
    """A field added to SpamRecipe after a model shipped must not change that model's recipe hash at
    its default: each is in LEGACY at the value that means "as before" (e.g. ``zoo_every = 0``)."""
    from dataclasses import asdict

    defaults = asdict(sm.SpamRecipe())
    assert sm.LEGACY["zoo_every"] == defaults["zoo_every"] == 0
    assert set(sm.LEGACY) <= set(defaults)


@pytest.mark.parametrize("colour", [False, True], ids=["rgb", "colour"])
def test_counts_input_and_crops_input_give_the_same_embedding(colour):
    """The graph's optional counts input (the contract's spam-counts stage): fed CropCounter's counts and
    empty crops it gives, bit for bit, what it gives for the crops; a caller that knows nothing of the
    stage sees one input and feeds crops as before."""
    import onnxruntime as ort

    from lida_plugin.residual import CropCounter

    r = sm.SpamRecipe(crop=32, crop_count=4, pca_dim=24, dim=8, colour=colour)
    crops = _crops(12, seed=4)
    mean, proj = sm.fit_map(sm.crop_features(crops, r.T, colour), [f"c{i % 3}" for i in range(12)], r)
    sess = ort.InferenceSession(sm.build_graph(mean, proj, r).SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["crops"]
    assert [i.name for i in sess.get_overridable_initializers()] == ["spam_counts"]
    own = sess.run(["embedding"], {"crops": crops})[0]
    fed = sess.run(["embedding"], {"crops": crops[:0], "spam_counts": CropCounter(r.T, colour).counts(crops)})[0]
    assert np.array_equal(own, fed)
    assert np.abs(own - sm.apply_map(sm.crop_features(crops, r.T, colour), mean, proj)).max() < 1e-4
    plain = sm.build_graph(mean, proj, r, counts_input=False)  # the graph without the stage: the same numbers
    sess0 = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(sess0.run(["embedding"], {"crops": crops})[0], own)
    assert sm.counts_metadata(r) == {"kind": "spam-counts", "version": 1, "input": "spam_counts", "T": 3,
                                     "channels": 5 if colour else 3}  # fmt: skip


def test_counts_stage_metadata_is_read_and_unknown_stages_are_ignored():
    from lida_plugin.contract import counts_stage

    stage = {"kind": "spam-counts", "version": 1, "input": "spam_counts", "T": 3, "channels": 5}
    meta = tiny_info(input_bits=8, counts_input=stage).to_metadata()
    info = parse_metadata(meta)
    assert info.counts_input == stage and counts_stage(info) == {"input": "spam_counts", "T": 3, "colour": True}
    assert "lida.counts_input" not in tiny_info().to_metadata() and counts_stage(tiny_info()) is None
    odd = [{"version": 2}, {"kind": "srm-counts"}, {"kind": ["x"]}, {"channels": 4}, {"T": "3"}, {"T": True}]
    odd.append({"input": ""})
    for other in odd:
        assert counts_stage(tiny_info(counts_input={**stage, **other})) is None  # the graph counts: the safe side
    with pytest.raises(ContractError, match="lida.counts_input must be a JSON object"):
        parse_metadata({**meta, "lida.counts_input": "[1, 2]"})


def test_the_bundled_encoder_counts_in_numpy_on_the_cpu_with_the_graphs_numbers(monkeypatch):
    from lida_plugin.encoder import Encoder, bundled_model_path
    from lida_plugin.errors import ModelError

    if not bundled_model_path().is_file():
        pytest.skip("no bundled model in this checkout")
    enc = Encoder(device="cpu", threads=1, batch_size=8)
    if enc.info.counts_input == {}:
        pytest.skip("the bundled model has no counts stage")
    assert enc.counts_input == {"input": "spam_counts", "T": 3, "colour": True}
    assert Encoder(device="cpu").threads == 1 and Encoder(device="cpu", threads=2).threads == 2  # see Encoder
    assert Encoder(device="cpu", feature_stage=False).threads is None  # the graph counts: ORT on every core
    graph = Encoder(device="cpu", threads=1, batch_size=8, feature_stage=False)
    monkeypatch.setenv("LIDA_COUNTS", "graph")
    env = Encoder(device="cpu", threads=1, batch_size=8)
    assert graph.counts_input is None and env.counts_input is None
    monkeypatch.setenv("LIDA_COUNTS", "numpy")
    with pytest.raises(ModelError, match="LIDA_COUNTS='numpy': use 'auto'"):
        Encoder(device="cpu")
    monkeypatch.delenv("LIDA_COUNTS")
    crops = np.random.default_rng(7).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    assert np.array_equal(enc.embed_crops(crops), graph.embed_crops(crops))


def test_a_model_declaring_a_counts_input_its_graph_lacks_is_run_on_crops(tmp_path, caplog):
    """Metadata that promises the stage without the graph input: a warning, and the crops path."""
    import onnx

    from lida_plugin.encoder import Encoder

    r = sm.SpamRecipe(crop=32, crop_count=4, pca_dim=24, dim=8, colour=False)
    crops = _crops(12, seed=5)
    mean, proj = sm.fit_map(sm.crop_features(crops, r.T), [f"c{i % 3}" for i in range(12)], r)
    info = tiny_info(embedding_dim=8, real_prototype=(1.0,) + (0.0,) * 7, input_bits=8, fingerprint_mode="rgb",
                     crop_size=32, min_image_size=32, counts_input=sm.counts_metadata(r))  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(sm.build_graph(mean, proj, r, info.to_metadata(), counts_input=False), str(path))
    with caplog.at_level("WARNING", logger="lida_plugin.encoder"):
        enc = Encoder(path, device="cpu")
    assert enc.counts_input is None and "which its graph lacks" in caplog.text
    assert enc.embed_crops(crops).shape == (12, 8)


def test_doctor_checks_the_feature_stage_against_the_graph(tmp_path, monkeypatch, capsys):
    """``lida doctor`` runs the self-test crops both ways; a counter that disagrees is a problem (exit 3)."""
    import json

    from lida_plugin.cli import main
    from lida_plugin.encoder import bundled_model_path
    from lida_plugin.residual import CropCounter

    if not bundled_model_path().is_file():
        pytest.skip("no bundled model in this checkout")
    monkeypatch.delenv("LIDA_MODEL", raising=False)
    monkeypatch.setenv("LIDA_STORE", str(tmp_path / "user.sqlite"))
    assert main(["doctor", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = report["model"]
    assert report["warnings"] == [
        f"LIDA_STORE={tmp_path / 'user.sqlite'} does not exist (yet): no user store is searched"
    ]
    assert model["threads"] == 1 and model["feature_stage"] == "numpy (spam-counts/1, agrees with the graph)"
    real = CropCounter.counts
    monkeypatch.setattr(CropCounter, "counts", lambda self, crops: real(self, crops[:, ::-1].copy()))  # BGR: wrong
    assert main(["doctor", "--json", "--device", "cpu"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert any("feature stage disagrees with the graph" in p and "LIDA_COUNTS=graph" in p for p in report["problems"])


def test_prepare_counts_in_the_callers_thread_and_finish_uses_those_counts(tmp_path, monkeypatch):
    """Attributor.prepare computes the feature stage (so lida attribute's decode threads do the counting);
    finish gives the same records with them or without them (a packed item drops them)."""
    from conftest import write_png

    from lida_plugin.attribute import Attributor
    from lida_plugin.batch.worker import pack, unpack
    from lida_plugin.encoder import Encoder, bundled_model_path
    from lida_plugin.store import open_stack

    if not bundled_model_path().is_file():
        pytest.skip("no bundled model in this checkout")
    enc = Encoder(device="cpu", batch_size=8)
    if enc.counts_input is None:
        pytest.skip("the bundled model has no counts stage")
    monkeypatch.setenv("LIDA_STORE", str(tmp_path / "none.sqlite"))  # no user store: the bundled one alone
    stack = open_stack(enc, None, use_default=True)
    att = Attributor(enc, stack)
    paths = [write_png(tmp_path / f"{k}.png", k, 7, size=256) for k in ("gen-a", "real")]
    prepared = [att.prepare(str(p)) for p in paths]
    assert all(p.stage_inputs is not None and p.stage_inputs.shape == (len(p.crops), 4, 5, 343) for p in prepared)
    light = [unpack(pack(p)) for p in prepared]
    assert all(p.stage_inputs is None for p in light)
    from lida_plugin.batch.worker import JobConfig, build_attributor

    decode_only = build_attributor(JobConfig(model=None, device="cpu"), with_store=False)
    assert decode_only.prepare(str(paths[0])).stage_inputs is None  # its items travel packed: no counting
    with_counts = [r.to_dict() for r in att.finish(prepared)]
    without = [r.to_dict() for r in att.finish(light)]
    assert with_counts == without
    with pytest.raises(ValueError, match="stage_inputs for 3 crops"):
        enc.embed_crops(prepared[0].crops, prepared[0].stage_inputs[:3])
    stack.close()


def test_resized_copies_fit_the_detection_stage_only(tmp_path):
    """``det_resize_copies``: the column and head also see downscaled train images; the rest of the model
    (map, crops, contract) is as without them, and the copies are seeded."""
    from lida_plugin.evaluate.corpus import load_corpus

    root = write_two_generator_corpus(tmp_path / "data")
    items = load_corpus(root)
    train = [i for i, e in enumerate(items) if e.split == "train"]
    plan = sm.resize_plan(train, 2)
    assert plan == sm.resize_plan(train, 2) and len(plan) == 2 * len(train)
    assert all(0.4 <= f <= 0.9 and flt in sm.RESIZE_FILTERS for _, f, flt in plan)
    small = dict(crop=32, crop_count=4, pca_dim=24, dim=8, colour=False, open_unknown_accept=0.0)
    r0 = replace(sm.VERSION1, **small, det_resize_copies=0)
    r1 = replace(r0, det_resize_copies=1)
    feats, counts = sm.resized_copy_features(items, sm.resize_plan(train, 1), r1, cache=tmp_path / "cache",
                                             progress=False)  # fmt: skip
    assert len(counts) == len(train) and feats.shape[0] == sum(counts) and all(c >= 1 for c in counts)
    again, _ = sm.resized_copy_features(items, sm.resize_plan(train, 1), r1, cache=tmp_path / "cache", progress=False)
    assert np.array_equal(again, feats)  # read back from the cache
    _, i0, _ = sm.fit_and_export(items, tmp_path / "m0.onnx", r0, progress=False)
    _, i1, _ = sm.fit_and_export(items, tmp_path / "m1.onnx", r1, progress=False)
    assert i0.model_id != i1.model_id and i0.detection_head["w"] != i1.detection_head["w"]
    assert i1.training["detection_fit"].endswith("1 resized copies of every train image (resize_plan)")
    assert i0.training["detection_fit"] == "train split"
    assert (i0.crop_size, i0.embedding_dim, i0.input_bits) == (i1.crop_size, i1.embedding_dim, i1.input_bits)


def test_sharpened_copies_are_seeded_enter_the_detection_fit_and_the_model_id(tmp_path):
    """``det_sharpen_copies``: seeded unsharp masks in their stated range, one per train image per copy, in the
    detection fit with their item's label; a new recipe field that leaves the model id alone at 0."""
    from lida_plugin.evaluate.corpus import load_corpus

    items = load_corpus(write_two_generator_corpus(tmp_path / "data", n=4))
    train = [i for i, e in enumerate(items) if e.split == "train"]
    plan = sm.sharpen_plan(train, 2)
    assert plan == sm.sharpen_plan(train, 2) != sm.sharpen_plan(train, 2, seed=1) and len(plan) == 2 * len(train)
    assert all(0.3 <= op.amount <= 1.5 and 0.6 <= op.sigma <= 2.0 for _, op in plan)
    px = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert not np.array_equal(plan[0][1].apply(px), px) and plan[0][1].apply(px).dtype == np.uint8
    assert sm.LEGACY["det_sharpen_copies"] == 0 == sm.SpamRecipe().det_sharpen_copies
    assert sm.LEGACY["sharpen_generated_only"] is False is sm.SpamRecipe().sharpen_generated_only
    r = replace(sm.VERSION1, crop=32, crop_count=4, colour=False, det_resize_copies=0, det_sharpen_copies=1)
    _, feats, counts = sm.corpus_features(items, r, None, progress=False)
    train_mask = np.array([e.split == "train" for e in items])
    det = sm.detection_fit_set(items, feats, counts, train_mask, r, None, progress=False)
    gen = np.array([e.kind == "generated" for e in items])
    assert list(det.source) == ["item"] * len(items) + ["sharpened"] * len(train)
    assert np.array_equal(det.generated[len(items) :], gen[train]) and det.fit[len(items) :].all()
    only = sm.detection_fit_set(items, feats, counts, train_mask, replace(r, sharpen_generated_only=True), None, False)
    assert list(only.source).count("sharpened") == int(gen[train].sum()) and only.generated[len(items) :].all()
    small = dict(pca_dim=24, dim=8, open_unknown_accept=0.0)
    _, i0, _ = sm.fit_and_export(items, tmp_path / "m0.onnx", replace(r, det_sharpen_copies=0, **small), progress=False)
    _, i1, _ = sm.fit_and_export(items, tmp_path / "m1.onnx", replace(r, **small), progress=False)
    assert i0.model_id != i1.model_id and "1 sharpened copies of every train image" in i1.training["detection_fit"]
    assert "sharpened" not in i0.training["detection_fit"]


def test_processed_copies_make_features_and_noise_floors_in_one_pass_and_cache_both(tmp_path, monkeypatch):
    """Each copy decoded once for its features and its noise floor (the floor of the crops the features read);
    the cache gives both back without decoding, and a cache file from before the floors were kept is made again."""
    from lida_plugin import decode
    from lida_plugin.evaluate.corpus import load_corpus
    from lida_plugin.noisegate import noise_score

    items = load_corpus(write_two_generator_corpus(tmp_path / "data", n=3))
    plan = [(i, sm.Noise(1.0 + i / 4, i % 2 == 1, 7 + i)) for i in range(len(items))]
    real_decode = decode.decode_file
    want = [noise_score(sm.image_crops(op.apply(real_decode(items[i].path).pixels), R)) for i, op in plan]
    decoded = []

    def counting_decode(path, *a, **kw):
        decoded.append(path)
        return real_decode(path, *a, **kw)

    monkeypatch.setattr(decode, "decode_file", counting_decode)
    cache = tmp_path / "cache"
    feats, counts, floors = sm.processed_copies(items, plan, R, cache, progress=False, tag="t")
    assert len(decoded) == len(plan) and np.allclose(floors, want)
    assert feats.shape[0] == sum(counts) and len(counts) == len(plan)
    f2, c2 = sm.processed_copy_features(items, plan, R, cache, progress=False, tag="t")
    assert len(decoded) == len(plan) and np.array_equal(f2, feats) and c2 == counts  # from the cache
    (old,) = cache.glob("spam-t-*.npz")
    np.savez(old, feats=feats, counts=np.asarray(counts))  # a cache file without floors
    _, _, again = sm.processed_copies(items, plan, R, cache, progress=False, tag="t")
    assert len(decoded) == 2 * len(plan) and np.allclose(again, want) and "floors" in np.load(old).files


def test_noise_head_reads_the_noise_floor_and_is_checked_by_the_contract():
    """A version-2 head: the noise floor shifts the score (here the only thing that tells the classes apart),
    the runtime needs the floors, and the contract refuses a malformed noise block."""
    from lida_plugin.contract import _head_problems

    rng = np.random.default_rng(4)
    d = 8
    x = rng.standard_normal((200, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.r_[np.zeros(100), np.ones(100)]
    noise = np.where(y > 0, 0.3, 1.0) + 0.05 * rng.standard_normal(200)  # generated: low floor, real: high
    head = sm.fit_noise_head(x, noise, y)
    assert head["version"] == 2 and _head_problems(head, d) == []
    info = tiny_info(embedding_dim=d, real_prototype=tuple([1.0] + [0.0] * (d - 1)), detection_head=head)
    s, _ = ai_scores(x, info, noise)
    assert s[y == 1].mean() > 0.8 > 0.2 > s[y == 0].mean()
    dets = detect(x[:2], info, noise[:2])
    assert [d_.noise_floor for d_ in dets] == pytest.approx(noise[:2].tolist())
    with pytest.raises(ValueError, match="noise floor"):
        ai_scores(x, info)
    bad = {**head, "noise": {**head["noise"], "u": head["noise"]["u"][:-1]}}
    assert "'u' must be 8 numbers" in _head_problems(bad, d)[0]
    assert "version" in _head_problems({**head, "noise": {**head["noise"], "version": 9}}, d)[0]


def test_noise_head_exports_and_column_noise_keeps_the_noised_copies_out_of_the_retrieval_space(tmp_path):
    """``head_noise`` end to end: a version-2 head in the exported model, calibrated on noised versions too;
    ``column_noise=False`` fits the detection column (a retrieval dimension) without the noised copies, the head
    still with them."""
    from lida_plugin.detect import needs_noise
    from lida_plugin.evaluate.corpus import load_corpus

    root = write_two_generator_corpus(tmp_path / "data")
    items = load_corpus(root)
    base = dict(crop=32, crop_count=4, pca_dim=24, dim=8, colour=False, open_unknown_accept=0.0, det_resize_copies=0)
    r1 = sm.SpamRecipe(**base, det_noise_copies=1, noise_generated=True, head_noise=True)
    r2 = sm.SpamRecipe(**{**r1.__dict__, "column_noise": False})
    _, i1, _ = sm.fit_and_export(items, tmp_path / "m1.onnx", r1, progress=False)
    _, i2, _ = sm.fit_and_export(items, tmp_path / "m2.onnx", r2, progress=False)
    assert i1.detection_head["version"] == 2 and needs_noise(i1) and needs_noise(i2)
    assert "noised versions of each" in i1.training["detection_calibration"]
    assert i1.model_id != i2.model_id and sm.LEGACY["column_noise"] is True
    assert "in the head's fit only" in i2.training["detection_fit"]
    assert "head's fit only" not in i1.training["detection_fit"]
    # the column is the one fitted on the rows column_fit marks
    crops, feats, counts = sm.corpus_features(items, r2, None, progress=False)
    train = np.array([e.split == "train" for e in items])
    det = sm.detection_fit_set(items, feats, counts, train, r2, None, False, sm.image_noise_floors(crops, counts))
    assert set(det.source) == {"item", "noise"}
    owner = np.repeat(np.arange(len(items)), counts)
    mean, proj = sm.fit_map(feats[train[owner]], [sm.eval_label(items[i]) for i in owner[train[owner]]], r2)
    clean = det.fit & (det.source != "noise")
    pj, _, head = sm.fit_detection_stage(*det[:4], mean, proj, r2, det.noise, clean)
    col = sm.detection_column(*det[:3], clean, mean, proj, r2)
    assert np.array_equal(pj[:, -1], col) and head["version"] == 2
    pj_all, _, _ = sm.fit_detection_stage(*det[:4], mean, proj, r2, det.noise)
    assert not np.allclose(pj_all[:, -1], col)


def test_lida_train_spam_defaults_are_the_recipe_defaults():
    """``lida-train spam`` with no options asks for ``SpamRecipe()`` (so the command rebuilds the bundled model), the
    noise options reach the recipe, and the flags ``VERSION1`` names give it (the model bundled before the
    version-2 head)."""
    from lida_exporters.cli import build_parser, spam_recipe

    p = build_parser()
    assert spam_recipe(p.parse_args(["spam"])) == sm.SpamRecipe()
    r = spam_recipe(p.parse_args(["spam", "--det-noise-copies", "1", "--noise-sd", "0.5,1", "--no-noise-generated",
                                  "--no-head-noise", "--no-column-noise"]))  # fmt: skip
    got = (r.det_noise_copies, r.noise_sd, r.noise_generated, r.head_noise, r.column_noise)
    assert got == (1, (0.5, 1.0), False, False, False)
    v1 = ["--det-noise-copies", "0", "--noise-sd", "0.25,1.25", "--no-noise-generated", "--no-head-noise", "--head-l2",
          "0.01"]  # fmt: skip
    assert spam_recipe(p.parse_args(["spam", *v1])) == sm.VERSION1 and not sm.VERSION1.head_noise
    assert sm.SpamRecipe().head_noise and sm.SpamRecipe().det_noise_copies == 3
    with pytest.raises(SystemExit):
        p.parse_args(["spam", "--noise-sd", "2,1"])
