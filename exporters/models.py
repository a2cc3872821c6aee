"""Encoder definitions: the in-graph fingerprint layer, small ResNets and ``resnet50-lida``.

Every encoder takes the contract's input (``uint8 [N, 3, S, S]`` raw RGB) and returns
L2-normalised ``[N, D]`` embeddings. The fingerprint and the normalisation are the first layer
of the graph, so the exported ONNX file does exactly what training did.

Architectures (``build(name, ...)``; each a factory registered with ``@register_model(name)``,
``list_models()`` names them):

* ``lida-resnet-small``: the default for a 2-core CPU. 3x3 stem (stride 1, no max-pool), then
  four stages of one BasicBlock each, widths 32/64/128/256, strides 1/2/2/2; global average
  pool, linear to ``D``, L2 norm. ~1.2 M parameters.
* ``lida-resnet-tiny``: same shape, widths 16/32/64/128 (~0.3 M parameters).
* ``resnet50-lida``: torchvision ResNet-50 with *early downsampling removed*: ``conv1`` (7x7)
  has stride 1 instead of 2 and the 3x3 max-pool is replaced by identity, so ``layer1`` sees the
  full-resolution crop; layers 2-4 keep their stride-2 blocks; ``fc`` is replaced by a linear
  2048 -> ``D`` head. (Paper: "early-layer downsampling removed".)
* ``resnet50-lida-nomaxpool``: the authors' code's variant: only the max-pool removed, ``conv1``
  keeps stride 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: Normalisation applied after the fingerprint (values on a 0..1 scale first). ``scaled``
#: and ``binary`` use the moments of uniformly distributed low bits; ``rgb`` the ImageNet ones.
NORMALIZATION = {
    "scaled": {"mean": [0.494, 0.494, 0.494], "std": [0.324, 0.324, 0.324]},
    "binary": {"mean": [0.875, 0.875, 0.875], "std": [0.331, 0.331, 0.331]},
    "rgb": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


class Fingerprint(nn.Module):
    """uint8 RGB -> normalised float fingerprint. Exported in the graph (BitwiseAnd, opset 18).

    ``scaled``: ``(x & 7) * 36``; ``binary``: ``255 * (x & 7 != 0)``; ``rgb``: ``x``; then
    ``/255``, ``(v - mean) / std``. Matches :func:`lida_plugin.fingerprint.fingerprint`.
    """

    def __init__(self, mode: str = "scaled"):
        super().__init__()
        if mode not in NORMALIZATION:
            raise ValueError(f"unknown fingerprint mode {mode!r}")
        self.mode = mode
        norm = NORMALIZATION[mode]
        self.register_buffer("mean", torch.tensor(norm["mean"]).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(norm["std"]).view(1, 3, 1, 1) * 255.0, persistent=False)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The fingerprint image as float on the 0..255 scale (before normalisation)."""
        if self.mode == "rgb":
            return x.float()
        low = torch.bitwise_and(x, 7)
        if self.mode == "scaled":
            return low.float() * 36.0
        return (low != 0).float() * 255.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mean) / self.std


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class SmallResNet(nn.Module):
    """Stem (3x3, stride 1) + one BasicBlock per stage; no early downsampling."""

    def __init__(self, widths=(32, 64, 128, 256), strides=(1, 2, 2, 2), blocks=(1, 1, 1, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for w, s, b in zip(widths, strides, blocks, strict=True):
            for i in range(b):
                layers.append(BasicBlock(cin, w, s if i == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x):
        return self.layers(self.stem(x)).mean(dim=(2, 3))


def _resnet50_lida(remove_conv1_stride: bool) -> nn.Module:
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    if remove_conv1_stride:
        net.conv1.stride = (1, 1)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 2048
    return net


# ----------------------------------------------------------------------------- registry

#: Architecture name -> factory of its backbone (a module with an ``out_dim`` attribute).
_REGISTRY: dict[str, Callable[[], nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator: register a backbone factory under ``name`` (for :func:`build` and ``--arch``)."""

    def deco(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def list_models() -> list[str]:
    """Registered architecture names, in registration order."""
    return list(_REGISTRY)


def backbone(arch: str) -> nn.Module:
    """A freshly initialised backbone of the registered architecture ``arch``."""
    try:
        factory = _REGISTRY[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(_REGISTRY)}") from None
    return factory()


@register_model("lida-resnet-small")
def lida_resnet_small() -> nn.Module:
    return SmallResNet((32, 64, 128, 256))


@register_model("lida-resnet-tiny")
def lida_resnet_tiny() -> nn.Module:
    return SmallResNet((16, 32, 64, 128))


@register_model("resnet50-lida")
def resnet50_lida() -> nn.Module:
    return _resnet50_lida(remove_conv1_stride=True)


@register_model("resnet50-lida-nomaxpool")
def resnet50_lida_nomaxpool() -> nn.Module:
    return _resnet50_lida(remove_conv1_stride=False)


class Encoder(nn.Module):
    """Fingerprint layer -> backbone -> linear head to ``dim`` -> L2 normalisation."""

    def __init__(self, arch: str = "lida-resnet-small", mode: str = "scaled", dim: int = 128):
        super().__init__()
        self.arch, self.mode, self.dim = arch, mode, dim
        self.fingerprint = Fingerprint(mode)
        self.backbone = backbone(arch)
        self.head = nn.Linear(self.backbone.out_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(self.fingerprint(x))), dim=1, eps=1e-12)


def build(arch: str = "lida-resnet-small", mode: str = "scaled", dim: int = 128) -> Encoder:
    """The encoder of the registered architecture ``arch`` (:func:`list_models`)."""
    return Encoder(arch, mode, dim)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
