"""A generator zoo: real photos pushed through known pipelines, labelled by pipeline.

Each pipeline maps an ``H×W×3`` uint8 RGB photo to a generated image of (about) the same size
whose low bits carry the pipeline's fingerprint:

* ``bicubic-x2``, ``bicubic-x3``, ``lanczos-x2``: area downscale, then OpenCV interpolation up;
* ``espcn-x2/x3/x4``, ``fsrcnn-x2/x3/x4``, ``fsrcnn-small-x2``, ``lapsrn-x2``: area downscale,
  then the OpenCV ``dnn_superres`` network from ``../shared/generators``;
* ``jpeg-q50/q75/q90``: a JPEG round trip (OpenCV's libjpeg) at that quality;
* ``taef2``: encode + decode with the FLUX.2 tiny autoencoder (``taef2_*.pth``).

Pipelines whose weights are missing are skipped (listed by :func:`available`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

DEFAULT_GENERATORS = Path(__file__).resolve().parents[2] / "shared" / "generators"

_SR = {
    "espcn-x2": ("ESPCN_x2.pb", "espcn", 2),
    "espcn-x3": ("ESPCN_x3.pb", "espcn", 3),
    "espcn-x4": ("ESPCN_x4.pb", "espcn", 4),
    "fsrcnn-x2": ("FSRCNN_x2.pb", "fsrcnn", 2),
    "fsrcnn-x3": ("FSRCNN_x3.pb", "fsrcnn", 3),
    "fsrcnn-x4": ("FSRCNN_x4.pb", "fsrcnn", 4),
    "fsrcnn-small-x2": ("FSRCNN-small_x2.pb", "fsrcnn", 2),
    "lapsrn-x2": ("LapSRN_x2.pb", "lapsrn", 2),
}
_INTERP = {"bicubic-x2": ("cubic", 2), "bicubic-x3": ("cubic", 3), "lanczos-x2": ("lanczos", 2)}
_JPEG = {"jpeg-q50": 50, "jpeg-q75": 75, "jpeg-q90": 90}
TAEF2_THREADS = 2
ALL_PIPELINES = tuple(_INTERP) + tuple(_SR) + tuple(_JPEG) + ("taef2",)


def available(gen_dir: str | Path = DEFAULT_GENERATORS) -> list[str]:
    gen_dir = Path(gen_dir)
    out = list(_INTERP) + list(_JPEG)
    out += [k for k, (f, _, _) in _SR.items() if (gen_dir / f).is_file()]
    if (gen_dir / "taef2_encoder.pth").is_file() and (gen_dir / "taef2_decoder.pth").is_file():
        out.append("taef2")
    return [p for p in ALL_PIPELINES if p in out]


def _down(img: np.ndarray, s: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, (w // s, h // s), interpolation=cv2.INTER_AREA)


class Zoo:
    """Holds the loaded networks; ``apply(name, rgb)`` runs one pipeline."""

    def __init__(self, gen_dir: str | Path = DEFAULT_GENERATORS):
        self.gen_dir = Path(gen_dir)
        self._sr: dict[str, object] = {}
        self._taef2 = None

    def apply(self, name: str, rgb: np.ndarray) -> np.ndarray:
        import cv2

        if name in _INTERP:
            kind, s = _INTERP[name]
            small = _down(rgb, s)
            flag = cv2.INTER_CUBIC if kind == "cubic" else cv2.INTER_LANCZOS4
            return cv2.resize(small, (small.shape[1] * s, small.shape[0] * s), interpolation=flag)
        if name in _JPEG:
            ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, _JPEG[name]])
            return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
        if name in _SR:
            f, algo, s = _SR[name]
            if name not in self._sr:
                sr = cv2.dnn_superres.DnnSuperResImpl_create()
                try:
                    sr.readModel(str(self.gen_dir / f))
                except cv2.error as exc:  # e.g. OpenCV 5 cannot read these TensorFlow graphs (pyproject pins < 5)
                    msg = str(exc).strip().splitlines()[-1]
                    raise RuntimeError(
                        f"{self.gen_dir / f}: OpenCV {cv2.__version__} cannot read this model: {msg}"
                    ) from None
                sr.setModel(algo, s)
                self._sr[name] = sr
            out = self._sr[name].upsample(np.ascontiguousarray(_down(rgb, s)[..., ::-1]))
            return np.ascontiguousarray(out[..., ::-1])
        if name == "taef2":
            return self._taef2_roundtrip(rgb)
        raise ValueError(f"unknown zoo pipeline {name!r}; choose from {ALL_PIPELINES}")

    def _taef2_roundtrip(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        if self._taef2 is None:
            self._taef2 = TAEF2(self.gen_dir)
        h, w = rgb.shape[:2]
        h8, w8 = h // 8 * 8, w // 8 * 8
        x = torch.from_numpy(np.array(rgb[:h8, :w8])).permute(2, 0, 1)[None].float() / 255.0
        # Fixed intra-op thread count: float reductions depend on it, and a few low bits of the
        # output with them. 2 threads is what the shipped model's zoo was made with.
        threads = torch.get_num_threads()
        torch.set_num_threads(TAEF2_THREADS)
        try:
            with torch.no_grad():
                y = self._taef2.decoder(self._taef2.encoder(x))
        finally:
            torch.set_num_threads(threads)
        y = (y.clamp(0, 1) * 255.0).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        return np.ascontiguousarray(y)


def _taef2_modules():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, pool: bool):
            super().__init__()
            c = 64
            self.conv = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c, c, 3, padding=1),
            )  # fmt: skip
            self.pool = (
                nn.Sequential(nn.Conv2d(c, 256, 1, bias=False), nn.GroupNorm(4, 256), nn.ReLU(),
                              nn.Conv2d(256, c, 1, bias=False))
                if pool else None
            )  # fmt: skip

        def forward(self, x):
            if self.pool is not None:
                x = x + self.pool(x)
            return torch.relu(self.conv(x) + x)

    class Clamp(nn.Module):
        def forward(self, x):
            return torch.tanh(x / 3) * 3

    def conv(cin, cout, stride=1, bias=True):
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)

    enc = nn.Sequential(
        conv(3, 64), Block(False), conv(64, 64, 2, False), Block(False), Block(False), Block(False),
        conv(64, 64, 2, False), Block(False), Block(False), Block(False), conv(64, 64, 2, False),
        Block(True), Block(True), Block(True), conv(64, 32),
    )  # fmt: skip
    up = nn.Upsample(scale_factor=2, mode="nearest")
    dec = nn.Sequential(
        Clamp(), conv(32, 64), nn.ReLU(), Block(True), Block(True), Block(True), up, conv(64, 64, bias=False),
        Block(False), Block(False), Block(False), up, conv(64, 64, bias=False), Block(False), Block(False),
        Block(False), up, conv(64, 64, bias=False), Block(False), conv(64, 3),
    )  # fmt: skip
    return enc, dec


class TAEF2:
    """The FLUX.2 tiny autoencoder (architecture as described in ``../shared/data/README.md``)."""

    def __init__(self, gen_dir: str | Path = DEFAULT_GENERATORS):
        import torch

        self.encoder, self.decoder = _taef2_modules()
        for mod, f in ((self.encoder, "taef2_encoder.pth"), (self.decoder, "taef2_decoder.pth")):
            sd = torch.load(Path(gen_dir) / f, map_location="cpu", weights_only=True)
            mod.load_state_dict({k: v.float() for k, v in sd.items()})
            mod.eval()


def make_zoo(
    photos: list[np.ndarray], pipelines: list[str], gen_dir: str | Path = DEFAULT_GENERATORS, progress: bool = True
) -> dict[str, list[np.ndarray]]:
    """Run every pipeline on every photo; returns ``{pipeline: [images]}``."""
    from tqdm import tqdm

    zoo = Zoo(gen_dir)
    out: dict[str, list[np.ndarray]] = {p: [] for p in pipelines}
    for p in tqdm(pipelines, desc="zoo", disable=not progress):
        for img in photos:
            out[p].append(zoo.apply(p, img))
    return out


def cached_zoo(
    photos: list[np.ndarray],
    photo_ids: list[str],
    pipelines: list[str],
    cache_dir: str | Path,
    gen_dir: str | Path = DEFAULT_GENERATORS,
) -> dict[str, list[np.ndarray]]:
    """:func:`make_zoo`, cached in ``cache_dir`` (an ``.npz`` keyed by photos and pipelines)."""
    key = hashlib.sha256(("\n".join(photo_ids) + "|" + ",".join(pipelines)).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"zoo-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {p: [z[f"{p}/{i}"] for i in range(len(photos))] for p in pipelines}
    out = make_zoo(photos, pipelines, gen_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"{p}/{i}": im for p in pipelines for i, im in enumerate(out[p])})
    tmp.replace(path)
    return out
