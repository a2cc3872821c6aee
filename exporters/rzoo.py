"""A zoo of random decoders: many synthetic "generators" made on the fly from the real photos.

Issue #10 asks whether hundreds of synthetic pipelines teach the map what differs between
*decoders in general*, rather than between the corpus' own generators. Each decoder here imitates
the last stage of a latent generator: a real photo is area-downscaled by ``scale`` (the "latent"),
then a small convolutional decoder with **random weights** upsamples it back (nearest + conv,
bilinear + conv, transposed conv or pixel shuffle; ``width`` channels, ``depth`` convolutions per
stage, one activation). The decoder output's high frequencies (the output minus its Gaussian blur),
normalised to ``amplitude`` grey levels RMS, replace the photo's own (the photo blurred with the
same ``sigma``), and the sum is rounded to uint8: the image keeps its content and sharpness, and
the finest scales, the ones the residual statistics read, are the decoder's.

A decoder is a :class:`DecoderSpec` drawn from a seed, so a zoo is named by ``(n, seed)`` and made
again bit for bit with a fixed torch thread count (:data:`THREADS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UPSAMPLERS = ("nearest", "bilinear", "transposed", "pixelshuffle")
ACTIVATIONS = ("relu", "silu", "gelu", "leaky")
#: Fixed intra-op thread count: float reductions depend on it, and a few low bits of the output with them.
THREADS = 2
#: The side the photos are centre-cropped to before a decoder sees them (16 serving crops of 64²).
SIDE = 256


@dataclass(frozen=True)
class DecoderSpec:
    seed: int
    scale: int  # 2, 4 or 8: how far the photo is downscaled before decoding
    upsampler: str
    width: int
    depth: int  # convolutions after each x2 upsampling
    activation: str
    amplitude: float  # RMS of the decoder's contribution, in grey levels
    sigma: float  # the Gaussian that splits low (the photo's) from high frequencies (the decoder's)

    @property
    def name(self) -> str:
        return f"rdec{self.seed}-x{self.scale}-{self.upsampler}-w{self.width}d{self.depth}-{self.activation}"


def draw_specs(n: int, seed: int = 0) -> list[DecoderSpec]:
    """``n`` decoder specifications drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(
            DecoderSpec(
                seed=seed * 100_000 + i,
                scale=int(rng.choice([2, 4, 8])),
                upsampler=str(rng.choice(UPSAMPLERS)),
                width=int(rng.choice([16, 32, 48])),
                depth=int(rng.integers(1, 3)),
                activation=str(rng.choice(ACTIVATIONS)),
                amplitude=float(rng.uniform(2.0, 8.0)),
                sigma=float(rng.uniform(0.6, 1.5)),
            )
        )
    return out


def _decoder(spec: DecoderSpec):
    import torch
    from torch import nn

    torch.manual_seed(spec.seed)
    act = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "leaky": lambda: nn.LeakyReLU(0.2)}[spec.activation]
    c = spec.width
    layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), act()]
    for _ in range(int(np.log2(spec.scale))):
        if spec.upsampler == "transposed":
            layers += [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1)]
        elif spec.upsampler == "pixelshuffle":
            layers += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2)]
        else:
            layers += [nn.Upsample(scale_factor=2, mode=spec.upsampler), nn.Conv2d(c, c, 3, padding=1)]
        layers.append(act())
        for _ in range(spec.depth):
            layers += [nn.Conv2d(c, c, 3, padding=1), act()]
    layers.append(nn.Conv2d(c, 3, 3, padding=1))
    net = nn.Sequential(*layers).eval()
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, std=0.1)
    return net


def centre(img: np.ndarray, side: int = SIDE) -> np.ndarray | None:
    """The centre ``side``² of ``img``, or None when it is smaller."""
    h, w = img.shape[:2]
    if min(h, w) < side:
        return None
    y, x = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(img[y : y + side, x : x + side, :3])


def apply(spec: DecoderSpec, photos: list[np.ndarray], net=None) -> list[np.ndarray]:
    """``spec``'s decoder on each ``SIDE``² photo: uint8 images of the same size."""
    import cv2
    import torch

    net = net if net is not None else _decoder(spec)
    s = spec.scale
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        for img in photos:
            h, w = img.shape[:2]
            small = cv2.resize(img, (w // s, h // s), interpolation=cv2.INTER_AREA)
            base = cv2.GaussianBlur(img.astype(np.float64), (0, 0), spec.sigma)
            x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            with torch.no_grad():
                y = net(x)[0].permute(1, 2, 0).numpy().astype(np.float64)
            y -= cv2.GaussianBlur(y, (0, 0), spec.sigma)
            y *= spec.amplitude / max(float(y.std()), 1e-6)
            out.append(np.clip(np.rint(base + y), 0, 255).astype(np.uint8))
    finally:
        torch.set_num_threads(threads)
    return out


def make(
    photos: list[np.ndarray], n: int, per_decoder: int, seed: int = 0, progress: bool = True
) -> tuple[list[np.ndarray], list[str]]:
    """``n`` random decoders, each on ``per_decoder`` photos drawn (seeded) from ``photos`` (centre
    ``SIDE``² crops; smaller photos are not used); returns ``(images, decoder name per image)``."""
    from tqdm import tqdm

    pool = [c for c in (centre(p) for p in photos) if c is not None]
    if not pool:
        raise ValueError(f"no photo is at least {SIDE}x{SIDE}")
    rng = np.random.default_rng(seed + 1)
    images, names = [], []
    for spec in tqdm(draw_specs(n, seed), desc="random decoders", disable=not progress):
        pick = rng.choice(len(pool), size=min(per_decoder, len(pool)), replace=False)
        images += apply(spec, [pool[i] for i in pick])
        names += [spec.name] * len(pick)
    return images, names


def cached(
    photos: list[np.ndarray], photo_ids: list[str], n: int, per_decoder: int, seed: int, cache_dir: str | Path,
    progress: bool = True,
) -> tuple[list[np.ndarray], list[str]]:  # fmt: skip
    """:func:`make`, cached in ``cache_dir`` (an ``.npz`` keyed by the photos, the specs and the code's settings)."""
    specs = [dataclasses.astuple(s) for s in draw_specs(n, seed)]
    key = hashlib.sha256(repr((photo_ids, specs, per_decoder, seed, SIDE, THREADS)).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"rzoo-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return list(z["images"]), [str(s) for s in z["names"]]
    images, names = make(photos, n, per_decoder, seed, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=np.stack(images), names=np.array(names))
    tmp.replace(path)
    return images, names
