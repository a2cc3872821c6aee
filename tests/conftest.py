"""Shared fixtures: a tiny contract-honouring ONNX encoder, synthetic images, ../shared data.

The tiny encoder is real (it fingerprints in the graph and embeds with a fixed random strided
convolution) but untrained; the product never ships it. It exists so runtime tests do not
depend on the bundled model.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lida_plugin.contract import INPUT_NAME, OUTPUT_NAME, ModelInfo

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LIDA_SHARED", REPO.parent / "shared"))

TINY_CROP = 32
TINY_DIM = 24


def synthetic_pixels(kind: str, seed: int, size: int = 128) -> np.ndarray:
    """An RGB image whose high bits are smooth content and whose low 3 bits are the 'generator'.

    ``kind`` ``"real"`` gets grey content and random low bits (sensor-like noise) the same in the three channels:
    channel-independent noise of that strength, or colour steps on every row, are what ``lida_plugin.noisegate``
    reads as added noise, which voids a ``real`` reading; any other kind gets an 8×8
    low-bit pattern tiled over the image, fixed by the kind's name, so images of one kind share
    a fingerprint whatever their content.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([(xx * rng.uniform(0.5, 1.5) + yy * rng.uniform(0.2, 1)) % 256 for _ in range(3)], axis=-1)
    high = (base.astype(np.uint8) & 0xF8).astype(np.uint8)
    if kind == "real":
        high = np.repeat(high[..., :1], 3, axis=2)
        low = np.repeat(rng.integers(0, 8, (size, size, 1), dtype=np.uint8), 3, axis=2)
    else:
        k = np.random.default_rng(_KIND_SEEDS.get(kind, zlib.crc32(kind.encode())))
        tile = k.integers(0, 8, (8, 8, 3), dtype=np.uint8)
        low = np.tile(tile, (size // 8, size // 8, 1))
        noise = rng.random((size, size, 3)) < 0.05  # a little disagreement between images
        low = np.where(noise, rng.integers(0, 8, low.shape, dtype=np.uint8), low)
    return high | low


_KIND_SEEDS = {"gen-a": 11, "gen-b": 22, "gen-c": 33, "gen-d": 44}


def write_png(path: Path, kind: str, seed: int, size: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_pixels(kind, seed, size)).save(path)
    return path


def write_two_generator_corpus(root: Path, n: int = 8, size: int = 96) -> Path:
    """A tiny corpus for the exporters' fits: ``n`` real photos and ``n`` images of each of two generators (the
    open-set threshold needs two); returns ``root``."""
    for i in range(n):
        write_png(root / "real" / "set" / f"r{i}.png", "real", 300 + i, size=size)
        write_png(root / "generated" / "gen-a" / f"g{i}.png", "gen-a", 400 + i, size=size)
        write_png(root / "generated" / "gen-b" / f"h{i}.png", "gen-b", 500 + i, size=size)
    return root


def build_tiny_model(path: Path, info: ModelInfo, seed: int = 0) -> Path:
    """Write an ONNX encoder honouring the contract: BitwiseAnd -> scale -> conv8/8 -> |.| -> mean -> L2."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((info.embedding_dim, 3, 8, 8)).astype(np.float32)
    s = info.crop_size
    nodes = [
        helper.make_node("BitwiseAnd", [INPUT_NAME, "seven"], ["low"]),
        helper.make_node("Cast", ["low"], ["lowf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["lowf", "scale"], ["fp"]),
        helper.make_node("Sub", ["fp", "half"], ["centred"]),
        helper.make_node("Conv", ["centred", "w"], ["conv"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Abs", ["conv"], ["mag"]),
        helper.make_node("ReduceMean", ["mag", "axes"], ["pooled"], keepdims=0),
        helper.make_node("LpNormalization", ["pooled"], [OUTPUT_NAME], axis=1, p=2),
    ]
    inits = [
        numpy_helper.from_array(np.array(7, np.uint8), "seven"),
        numpy_helper.from_array(np.array(36.0 / 255.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-lida",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["n", 3, s, s])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", info.embedding_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for k, v in info.to_metadata().items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def tiny_info(**over) -> ModelInfo:
    base = dict(
        model_id="tiny-test-encoder",
        architecture="tiny-conv8-test",
        fingerprint_mode="scaled",
        crop_size=TINY_CROP,
        crop_count=4,
        crop_align=8,
        min_image_size=TINY_CROP,
        normalization={"mean": [0.5, 0.5, 0.5], "std": [1.0, 1.0, 1.0]},
        embedding_dim=TINY_DIM,
        real_prototype=tuple([1.0] + [0.0] * (TINY_DIM - 1)),
        detection_temperature=0.05,
        detection_threshold=0.5,
        detection_fpr=0.05,
        open_set_threshold=0.9,
    )
    base.update(over)
    return ModelInfo(**base)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A calibrated tiny encoder: prototype = mean embedding of synthetic real images, threshold
    halfway between the real and generated score ranges."""
    from lida_plugin.contract import ai_score
    from lida_plugin.decode import decode_file
    from lida_plugin.encoder import Encoder

    d = tmp_path_factory.mktemp("tiny")
    draft = build_tiny_model(d / "draft.onnx", tiny_info())
    enc = Encoder(draft, device="cpu", threads=1)

    def embed(kind, seeds):
        paths = [write_png(d / "calib" / f"{kind}-{i}.png", kind, i) for i in seeds]
        return enc.embed_crop_sets([enc.crops_for(decode_file(p)) for p in paths])

    real = embed("real", range(100, 110))
    fake = np.concatenate([embed(k, range(100, 104)) for k in ("gen-a", "gen-b", "gen-c")])
    proto = real.mean(axis=0)
    proto /= np.linalg.norm(proto)
    tau = 0.05
    sr, sf = ai_score(real @ proto, tau), ai_score(fake @ proto, tau)
    assert sr.max() < sf.min(), "synthetic real and generated images must separate for the tiny model"
    info = tiny_info(
        real_prototype=tuple(float(v) for v in proto), detection_threshold=float((sr.max() + sf.min()) / 2)
    )
    return build_tiny_model(d / "tiny.onnx", info)


@pytest.fixture
def images(tmp_path) -> dict[str, list[Path]]:
    """Synthetic PNGs: 3 each of gen-a, gen-b, gen-d and real."""
    out = {}
    for kind in ("gen-a", "gen-b", "gen-d", "real"):
        out[kind] = [write_png(tmp_path / "img" / f"{kind}-{i}.png", kind, 1000 + i) for i in range(3)]
    return out


@pytest.fixture
def isolated_env(tmp_path, monkeypatch, tiny_model) -> Path:
    """LIDA_MODEL = the tiny model, LIDA_STORE in tmp, no bundled default store."""
    monkeypatch.setenv("LIDA_MODEL", str(tiny_model))
    store = tmp_path / "user-store.sqlite"
    monkeypatch.setenv("LIDA_STORE", str(store))
    monkeypatch.setenv("LIDA_DEVICE", "cpu")
    return store


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips when absent, fails instead when LIDA_REQUIRE_SHARED=1 (CI)."""
    data = SHARED / "data"
    if not (data / "manifest.tsv").is_file():
        if os.environ.get("LIDA_REQUIRE_SHARED") == "1":
            pytest.fail(f"LIDA_REQUIRE_SHARED=1 but {data} is missing")
        pytest.skip(f"{data} not present")
    return data


@pytest.fixture
def attributor(isolated_env, tiny_model):
    """An :class:`~lida_plugin.attribute.Attributor`: the tiny encoder, an empty user store, no default store."""
    from lida_plugin.attribute import Attributor
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import open_stack

    enc = Encoder(tiny_model, device="cpu", threads=1)
    stack = open_stack(enc, None, use_default=False)
    yield Attributor(enc, stack)
    stack.close()
