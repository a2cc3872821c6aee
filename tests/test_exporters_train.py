"""Training/export tests: fingerprint layer, losses, tiny end-to-end run, ONNX parity."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from lida_exporters import data as D  # noqa: E402
from lida_exporters.export import PARITY_TOL, detection_threshold, export_checkpoint, open_set_threshold, parity  # noqa: E402
from lida_exporters.losses import CenterLoss, detection_loss, lida_loss  # noqa: E402
from lida_exporters.models import Fingerprint, build  # noqa: E402
from lida_exporters.train import Recipe, adapt, pretrain  # noqa: E402
from lida_plugin.contract import INPUT_NAME, OUTPUT_NAME, parse_metadata  # noqa: E402
from lida_plugin.fingerprint import fingerprint  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need_shared() -> Path:
    if not SHARED.is_dir():
        if os.environ.get("LIDA_REQUIRE_SHARED") == "1":
            pytest.fail(f"LIDA_REQUIRE_SHARED=1 but {SHARED} is absent")
        pytest.skip(f"{SHARED} absent")
    return SHARED


@pytest.mark.parametrize("mode", ["scaled", "binary", "rgb"])
def test_fingerprint_layer_matches_numpy(mode):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    fp = Fingerprint(mode)
    got = fp.raw(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, fingerprint(x, mode).astype(np.float32))
    # feeding x & 7 gives the same fingerprint (the store re-embeds from low bits)
    if mode != "rgb":
        np.testing.assert_array_equal(fp(torch.from_numpy(x & 7)).numpy(), fp(torch.from_numpy(x)).numpy())


def test_center_loss_hand_computed():
    cl = CenterLoss(2, 2, alpha=0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    # first sight: centers = class means: c0 = (0.5, 0.5), c1 = (1, 1)
    loss = cl(x, y)
    # ||(0.5,-0.5)||^2 = 0.5 twice, 0 once -> mean over 3 = 1/3
    assert loss.item() == pytest.approx(1.0 / 3.0)
    cl.centers[0] = torch.tensor([0.0, 0.0])
    cl.update(x, y)
    # delta_0 = sum(c0 - x_i) / (1 + 2) = (-1, -1) / 3; c0 <- c0 - 0.5 * delta_0 = (1/6, 1/6)
    np.testing.assert_allclose(cl.centers[0].numpy(), [1 / 6, 1 / 6], rtol=1e-6)
    np.testing.assert_allclose(cl.centers[1].numpy(), [1.0, 1.0], rtol=1e-6)


def test_detection_loss_hand_computed():
    p = torch.tensor([1.0, 0.0])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    is_real = torch.tensor([True, False, False])
    tau = 0.5
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    want = -math.log(sig(1 / tau)) - 0.5 * (math.log(1 - sig(0.0)) + math.log(1 - sig(-1 / tau)))
    assert detection_loss(x, is_real, p * 3.0, tau).item() == pytest.approx(want, rel=1e-6)
    assert lida_loss(torch.tensor(1.0), torch.tensor(2.0), 0.9).item() == pytest.approx(2.8)


def test_thresholds():
    scores = np.linspace(0, 1, 100)
    t = detection_threshold(scores, 0.05)
    assert (scores >= t).mean() <= 0.05 + 1e-9
    emb = np.eye(4)[[0, 0, 1, 1]] + 0.1
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    t, stats = open_set_threshold(emb, ["a", "a", "b", "b"])
    assert stats["balanced_accuracy"] == 1.0 and -1 <= t <= 1


def _toy_root(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for kind, label, n in [("generated", "g1", 2), ("generated", "g2", 2), ("real", "r1", 3)]:
        d = tmp_path / kind / label
        d.mkdir(parents=True)
        for i in range(n):
            px = rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)
            if label == "g1":
                px &= 0xF8  # a "generator" that zeroes the low bits
            Image.fromarray(px).save(d / f"{i}.png")
    (tmp_path / "real" / "r1" / "broken.png").write_bytes(b"not a png")
    return tmp_path


def test_tiny_end_to_end(tmp_path):
    torch.set_num_threads(1)
    root = _toy_root(tmp_path / "data")
    with pytest.warns(UserWarning, match="skipped 1 unusable"):
        items = D.load_folder(root)
    # every class has a held-out image for calibration and a train image for adaptation
    assert {it.split for it in items} == {"train", "heldout"}
    r = Recipe(arch="lida-resnet-tiny", dim=16, crop=32, crop_count=4, pretrain="real", pretrain_steps=3,
               pretrain_batch=4, adapt_steps=3, adapt_batch=8)  # fmt: skip
    run = tmp_path / "runs" / "t"
    ck = pretrain(r, items, run, progress=False)
    ck = adapt(r, items, ck, run, progress=False)
    out, info, stats = export_checkpoint(ck, items, tmp_path / "enc.onnx")
    assert stats["parity_max_abs_diff"] <= PARITY_TOL
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    got = parse_metadata(meta)
    assert got.model_id == info.model_id and got.embedding_dim == 16 and got.crop_size == 32
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    e = sess.run([OUTPUT_NAME], {INPUT_NAME: np.zeros((5, 3, 32, 32), np.uint8)})[0]
    assert e.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # resuming a finished run is a no-op
    assert adapt(r, items, None, run, progress=False) == ck


def test_resized_input_recipe_exports_a_model_the_runtime_serves_identically(tmp_path):
    """The authors' configuration (whole image resized, one crop): training, export metadata and
    the runtime's crops agree, and the recipe field leaves older recipes' hashes alone."""
    from lida_exporters.eval_conditions import baseline_recipe, budget_steps
    from lida_plugin.decode import decode_file
    from lida_plugin.encoder import Encoder

    assert "resize" not in Recipe().to_json() and '"resize": 48' in Recipe(resize=48).to_json()
    authors = baseline_recipe("authors")
    assert (authors.resize, authors.crop, authors.crop_count) == (256, 256, 1)
    assert budget_steps(authors, 600, 200) == (150, 50)  # 8 x 256^2 = 4 x (32 x 64^2) pixels a step
    assert budget_steps(Recipe(), 600, 200) == (600, 200)
    resized = baseline_recipe("resized")  # the matched fingerprint recipe, only resized: same steps
    assert (resized.resize, resized.crop, resized.mode) == (256, 64, "scaled")
    assert budget_steps(resized, 600, 200) == (600, 200)

    torch.set_num_threads(1)
    root = _toy_root(tmp_path / "data")
    with pytest.warns(UserWarning, match="skipped 1 unusable"):
        items = D.load_folder(root)
    r = Recipe(arch="lida-resnet-tiny", dim=16, crop=32, crop_count=1, resize=32, pretrain="real", pretrain_steps=2,
               pretrain_batch=4, adapt_steps=2, adapt_batch=8)  # fmt: skip
    run = tmp_path / "runs" / "rz"
    ck = adapt(r, items, pretrain(r, items, run, progress=False), run, progress=False)
    out, info, _ = export_checkpoint(ck, items, tmp_path / "rz.onnx")
    assert info.input_resize == 32
    enc = Encoder(out, device="cpu", threads=1)
    assert enc.info.input_resize == 32
    from lida_exporters.train import embed_images, load_encoder

    model, _, _ = load_encoder(ck)
    paths = sorted((root / "generated" / "g2").glob("*.png"))  # 80x72: resized to 32x32, not cropped
    want = embed_images(model, [decode_file(p).pixels for p in paths], 32, 1, 8, resize=32)
    got = enc.embed_crop_sets([enc.crops_for(decode_file(p)) for p in paths])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_runtime_loads_export(tmp_path):
    enc_mod = pytest.importorskip("lida_plugin.encoder")
    from lida_exporters.export import export_untrained

    path = export_untrained(Recipe(dim=16, crop=32, crop_count=4), tmp_path / "u.onnx")
    if not hasattr(enc_mod, "Encoder"):
        pytest.skip("lida_plugin.encoder.Encoder not available")
    enc = enc_mod.Encoder(path, device="cpu", threads=1)
    assert enc.info.embedding_dim == 16
    e = enc.embed_crops(np.zeros((3, 3, 32, 32), np.uint8))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)


def test_empty_and_malformed_folder(tmp_path):
    with pytest.raises(D.DataError, match="does not exist"):
        D.load_folder(tmp_path / "nope")
    with pytest.raises(D.DataError, match="malformed"):
        D.load_folder(tmp_path)
    (tmp_path / "generated" / "g").mkdir(parents=True)
    with pytest.raises(D.DataError, match="no image files"):
        D.load_folder(tmp_path)


def test_cli_help_and_bad_folder(tmp_path, capsys):
    from lida_exporters.cli import main

    for cmd in ("pretrain", "adapt", "export", "reproduce", "evaluate"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert main(["pretrain", "--data", str(tmp_path), "--run", str(tmp_path / "r")]) == 2
    assert "malformed" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["lida-resnet-small", "resnet50-lida"])
def test_parity_architectures(tmp_path, arch):
    from lida_exporters.export import export_onnx

    torch.manual_seed(0)
    m = build(arch, "scaled", 32).eval()
    path = export_onnx(m, tmp_path / "m.onnx", 32)
    rng = np.random.default_rng(0)
    assert parity(m, path, rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)) <= PARITY_TOL


@pytest.mark.shared
def test_split_and_parity_on_real_fingerprints(tmp_path):
    root = _need_shared()
    entries = D.scan(root)
    names = {}
    for kind, label, _, f in entries:
        names.setdefault((kind, label), []).append(f.name)
    splits = {k: D.assign_split(v, *k) for k, v in names.items()}
    for k, s in splits.items():
        n_train = sum(v == "train" for v in s.values())
        assert n_train == math.ceil(len(s) / 2), k
    # one FFHQ face is in the same half in every FFHQ-derived class
    a = splits[("generated", "ldm-sr-bl")]
    face = {D.split_key("generated", "ldm-sr-bl", n): v for n, v in a.items()}
    for n, v in splits[("real", "ffhq256")].items():
        assert face[D.split_key("real", "ffhq256", n)] == v
    # parity on real fingerprints
    from lida_exporters.export import export_onnx

    items = D.load_folder(root, split="heldout", kinds=("real",), labels={"curban100"})
    crops = np.concatenate([D.eval_crops(it.pixels, 64, 4) for it in items[:4]])
    torch.manual_seed(0)
    m = build("lida-resnet-tiny", "scaled", 64).eval()
    path = export_onnx(m, tmp_path / "m.onnx", 64)
    assert parity(m, path, crops) <= PARITY_TOL


def test_eval_baseline_cache_is_reused_only_for_the_same_budget(tmp_path):
    """lida eval --train-baseline reuses runs/eval-<kind>/model.onnx only when it was trained with the
    requested steps (and data): another budget trains into its own folder instead of being silently
    served the old model."""
    import json as _json

    import onnx
    from onnx import TensorProto, helper

    from lida_exporters.eval_conditions import _baseline_run

    def model(path, training):
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
        m = helper.make_model(g)
        p = m.metadata_props.add()
        p.key, p.value = "lida.training", _json.dumps(training)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(m, str(path))

    data = str(tmp_path.resolve())
    want600 = {"pretrain_steps": 600, "adapt_steps": 200, "data_root": data}
    want3000 = {"pretrain_steps": 3000, "adapt_steps": 300, "data_root": data}
    assert _baseline_run(tmp_path / "runs", "rgb", want600) == tmp_path / "runs" / "eval-rgb"  # nothing yet
    model(tmp_path / "runs" / "eval-rgb" / "model.onnx", {"pretrain_steps": 600, "adapt_steps": 200})  # older: no data
    assert _baseline_run(tmp_path / "runs", "rgb", want600) == tmp_path / "runs" / "eval-rgb"
    other = _baseline_run(tmp_path / "runs", "rgb", want3000)
    assert other.parent == tmp_path / "runs" and other.name.startswith("eval-rgb-")
    assert _baseline_run(tmp_path / "runs", "rgb", want3000) == other  # the same folder on the next run
    model(tmp_path / "runs" / "eval-rgb" / "model.onnx", want600)  # recorded with its data root
    assert _baseline_run(tmp_path / "runs", "rgb", want600) == tmp_path / "runs" / "eval-rgb"
    elsewhere = _baseline_run(tmp_path / "runs", "rgb", {**want600, "data_root": "/elsewhere"})
    assert elsewhere not in (tmp_path / "runs" / "eval-rgb", other)


def test_training_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    """``--device``: ``auto`` trains where torch can (the CPU on a machine without CUDA, the same
    tensors as ``cpu``); ``cuda`` without a GPU, or a device torch does not know, is exit 2 with the
    reason before any data is read."""
    from lida_exporters.cli import main
    from lida_exporters.train import DeviceError, resolve_device

    torch.set_num_threads(1)
    with pytest.warns(UserWarning, match="skipped 1 unusable"):
        items = D.load_folder(_toy_root(tmp_path / "data"))
    r = Recipe(arch="lida-resnet-tiny", dim=16, crop=32, crop_count=4, pretrain="real", pretrain_steps=3,
               pretrain_batch=4, adapt_steps=3, adapt_batch=8)  # fmt: skip
    if not torch.cuda.is_available():
        a = adapt(r, items, pretrain(r, items, tmp_path / "cpu", progress=False), tmp_path / "cpu", progress=False)
        b = adapt(r, items, pretrain(r, items, tmp_path / "auto", progress=False, device="auto"), tmp_path / "auto",
                  progress=False, device="auto")  # fmt: skip
        sa, sb = torch.load(a, weights_only=False), torch.load(b, weights_only=False)
        assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
        with pytest.raises(DeviceError, match="sees no CUDA"):
            resolve_device("cuda")
        assert main(["pretrain", "--data", str(tmp_path / "nowhere"), "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(DeviceError):
        resolve_device("warp-drive")
    assert main(["adapt", "--data", str(tmp_path / "nowhere"), "--device", "warp-drive"]) == 2
    assert "--device warp-drive" in capsys.readouterr().err


def test_every_zoo_pipeline_runs_on_the_shared_generators(shared_data):
    """Each of the zoo's pipelines (the SR networks read by OpenCV, TAEF2 by torch) makes an image from a photo:
    an OpenCV that cannot read the .pb graphs (5.x) fails here, naming the file, not deep in a training run."""
    from lida_exporters import zoo

    gen = shared_data.parent / "generators"
    names = zoo.available(gen)
    assert {"espcn-x2", "fsrcnn-x2", "lapsrn-x2", "taef2"} <= set(names)  # the files are there
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    z = zoo.Zoo(gen)
    for name in names:
        out = z.apply(name, rgb)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 56, name
