"""SPAM residual statistics (Pevný, Bas, Fridrich, "Steganalysis by subtractive pixel adjacency
matrix", IEEE TIFS 2010): the numpy reference, torch-free.

Definition (this module is the reference the ONNX graph in ``exporters/spam_model.py`` is tested
against). For one channel ``I`` (``int``, ``H×W``), a direction ``s = (dy, dx)`` and ``T``:

* first differences ``D(p) = clip(I(p) - I(p + s), -T, T)`` wherever ``p + s`` is in the image;
* the second-order Markov transition probabilities
  ``M_s[a, b, c] = #{p: D(p)=a, D(p+s)=b, D(p+2s)=c} / #{p: D(p)=a, D(p+s)=b}``
  over every ``p`` with ``p + 3s`` in the image (``0`` where the denominator is ``0``);
* the 8 directions averaged into two blocks of ``(2T+1)^3`` values:
  straight ``F1 = mean(M_(0,1), M_(0,-1), M_(1,0), M_(-1,0))`` and
  diagonal ``F2 = mean(M_(1,1), M_(-1,-1), M_(1,-1), M_(-1,1))``;
  within a block the index is ``(a+T)(2T+1)^2 + (b+T)(2T+1) + (c+T)``.

The paper's ``M→_{u,v,w} = Pr(D_{i,j+2}=u | D_{i,j+1}=v, D_{i,j}=w)`` is ``M_(0,1)[w, v, u]``.
:func:`spam_features` concatenates, for the channels R, G, B in that order, the straight block
then the diagonal block: ``6 (2T+1)^3`` values, 2,058 for ``T = 3``.

**Colour differences** (:func:`colour_spam_features`): the same statistics of the two
inter-channel difference images ``R - G`` and ``B - G`` (integers in ``-255..255``). A generator's
decoder writes the three channels from shared features, so how their residuals move together is
a trace of the decoder; on ``lida eval``'s episodes these two channels added to the RGB ones
raised 1-shot Rank-1 by about 5 points and 5-shot by 11 (docs/evaluation.md). Their blocks follow
the RGB ones: ``10 (2T+1)^3`` values, 3,430 for ``T = 3``.

The statistics need the raw pixel differences, which the low three bit planes (``x & 7``) do
not keep: a model built on them declares ``lida.input_bits = 8`` (see :mod:`lida_plugin.contract`).
"""

from __future__ import annotations

import numpy as np

#: the 8 directions ``(dy, dx)``: the straight four, then the diagonal four
STRAIGHT = ((0, 1), (0, -1), (1, 0), (-1, 0))
DIAGONAL = ((1, 1), (-1, -1), (1, -1), (-1, 1))


def spam_dim(T: int = 3, colour: bool = False) -> int:
    """Length of :func:`spam_features`' vector, ``6 (2T+1)^3``; with ``colour``, of
    :func:`colour_spam_features`' ``10 (2T+1)^3``."""
    return (10 if colour else 6) * (2 * T + 1) ** 3


def _shift(a: np.ndarray, dy: int, dx: int, k: int) -> np.ndarray:
    """``a[p + k*s]`` for every ``p`` such that ``p + 3s`` lies in ``a`` (``s = (dy, dx)``)."""
    h, w = a.shape
    ys = slice(k * dy, h - (3 - k) * dy) if dy >= 0 else slice(-3 * dy + k * dy, h + k * dy)
    xs = slice(k * dx, w - (3 - k) * dx) if dx >= 0 else slice(-3 * dx + k * dx, w + k * dx)
    return a[ys, xs]


def transition(channel: np.ndarray, dy: int, dx: int, T: int = 3) -> np.ndarray:
    """``M_s`` of one channel (``H×W``) for direction ``s = (dy, dx)``, flat ``[(2T+1)^3]`` float64."""
    n = 2 * T + 1
    x = np.asarray(channel, dtype=np.int16)
    h, w = x.shape
    if h <= 3 * abs(dy) or w <= 3 * abs(dx):
        return np.zeros(n**3)
    # a = D(p), b = D(p+s), c = D(p+2s), with D(q) = I(q) - I(q+s): pixels p .. p+3s
    i0, i1, i2, i3 = (_shift(x, dy, dx, k) for k in range(4))
    a = np.clip(i0 - i1, -T, T) + T
    b = np.clip(i1 - i2, -T, T) + T
    c = np.clip(i2 - i3, -T, T) + T
    code = (a.astype(np.int64) * n + b) * n + c
    counts = np.bincount(code.ravel(), minlength=n**3).reshape(n * n, n).astype(np.float64)
    den = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, den, out=np.zeros_like(counts), where=den > 0).ravel()


def _spam_blocks(channels: np.ndarray, T: int) -> np.ndarray:
    """``[C, 2, (2T+1)^3]``: the straight and diagonal blocks of every channel of ``channels`` (``C×H×W``).

    Same numbers as averaging :func:`transition` over the 8 directions, at half the work: the
    windows of ``-s`` are those of ``s`` read backwards, so ``N_-s[a, b, c] = N_s[-c, -b, -a]``
    (joint counts), and one ``bincount`` serves all channels of a direction.
    """
    n = 2 * T + 1
    k = n**3
    nc, h, w = channels.shape
    if nc > 1 and h * w > 65536:  # one channel at a time keeps the work arrays in the core's cache:
        # 3 channels of 512^2 at once took 27 ms against 3 x 4.6 ms (benchmarks/lossy_cost.py)
        return np.concatenate([_spam_blocks(channels[i : i + 1], T) for i in range(nc)])
    x = channels.astype(np.int16)  # colour differences too: -255..255
    out = np.zeros((nc, 2, k))
    offset = (np.arange(nc, dtype=np.int16) * k)[:, None, None]
    for blk, (dy, dx) in ((0, (0, 1)), (0, (1, 0)), (1, (1, 1)), (1, (1, -1))):
        if h <= 3 * dy or w <= 3 * abs(dx):
            continue  # no 4-pixel window in this direction: its (and its reverse's) rows stay 0
        # D(q) = I(q) - I(q + s) on every q with q + s inside, clipped and shifted to 0..2T
        d = x[:, : h - dy, : w - dx] - x[:, dy:, dx:] if dx >= 0 else x[:, : h - dy, 1:] - x[:, dy:, : w - 1]
        np.clip(d, -T, T, out=d)
        d += T
        h2, w2 = d.shape[1:]
        if dx >= 0:
            a, b, c = d[:, : h2 - 2 * dy, : w2 - 2 * dx], d[:, dy : h2 - dy, dx : w2 - dx], d[:, 2 * dy :, 2 * dx :]
        else:
            a, b, c = d[:, : h2 - 2 * dy, 2:], d[:, dy : h2 - dy, 1 : w2 - 1], d[:, 2 * dy :, : w2 - 2]
        code = (a * n + b) * n + c + offset
        counts = np.bincount(code.ravel(), minlength=nc * k).reshape(nc, n, n, n).astype(np.float64)
        for m in (counts, counts[:, ::-1, ::-1, ::-1].transpose(0, 3, 2, 1)):
            m = m.reshape(nc, n * n, n)
            den = m.sum(axis=2, keepdims=True)
            out[:, blk] += np.divide(m, den, out=np.zeros_like(m), where=den > 0).reshape(nc, k)
    return out / 4.0


def _checked(rgb: np.ndarray, T: int, name: str) -> np.ndarray:
    """``rgb`` as ``[3, H, W]`` ``uint8``, or ``ValueError`` naming ``name`` and what is wrong."""
    px = np.asarray(rgb)
    if px.ndim != 3 or px.shape[2] < 3:
        raise ValueError(f"{name} needs an H x W x 3 image, got shape {px.shape}")
    if px.dtype != np.uint8:
        raise ValueError(f"{name} needs uint8 pixels, got {px.dtype}")
    if T < 1:
        raise ValueError("T must be >= 1")
    return px[:, :, :3].transpose(2, 0, 1)


def spam_features(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """SPAM features of an ``H×W×3`` ``uint8`` image: ``float32 [6 (2T+1)^3]`` (2,058 for ``T = 3``).

    Order: for each channel R, G, B, the straight block then the diagonal block (see the module
    docstring for the exact definition; the result equals averaging :func:`transition` over the
    directions of :data:`STRAIGHT` and :data:`DIAGONAL`).
    """
    return _spam_blocks(_checked(rgb, T, "spam_features"), T).reshape(-1).astype(np.float32)


def colour_channels(chw: np.ndarray) -> np.ndarray:
    """``[..., 5, H, W]`` int16: the channels R, G, B, R - G, B - G of ``[..., 3, H, W]`` pixels."""
    x = np.asarray(chw).astype(np.int16)
    r, g, b = x[..., 0:1, :, :], x[..., 1:2, :, :], x[..., 2:3, :, :]
    return np.concatenate([x[..., :3, :, :], r - g, b - g], axis=-3)


def colour_spam_features(rgb: np.ndarray, T: int = 3) -> np.ndarray:
    """SPAM of the channels R, G, B, R - G, B - G of an ``H×W×3`` ``uint8`` image:
    ``float32 [10 (2T+1)^3]`` (3,430 for ``T = 3``); the first ``6 (2T+1)^3`` equal
    :func:`spam_features`."""
    chw = _checked(rgb, T, "colour_spam_features")
    return _spam_blocks(colour_channels(chw), T).reshape(-1).astype(np.float32)


#: the direction ``s`` of each ``(s, -s)`` pair, in the order of :func:`crop_counts`' axis 1 (the counts
#: of ``-s`` are those of ``s`` read backwards; see :func:`_spam_blocks`)
COUNT_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


class CropCounter:
    """The joint counts of the SPAM windows of a batch of crops, fast: the part of a residual-statistics
    encoder's graph that ONNX Runtime runs slowest (its ``ScatterElements`` histograms), as the model
    contract's ``spam-counts`` feature stage (:data:`lida_plugin.contract.K_COUNTS`).

    ``counts(crops)`` takes ``uint8 [N, 3, S, S]`` and returns ``float32 [N, 4, C, (2T+1)^3]``: for each
    crop, each direction of :data:`COUNT_DIRECTIONS` and each channel (R, G, B, with ``colour`` also
    R - G and B - G), ``N_s[a, b, c] = #{p: D(p)=a, D(p+s)=b, D(p+2s)=c}`` at index
    ``(a+T)(2T+1)^2 + (b+T)(2T+1) + (c+T)``, the joint counts of :func:`_spam_blocks`.

    How: per direction, every window's code plus its (crop, channel) offset is built in place in
    ``int16`` work arrays (crops go in groups small enough for the offsets to fit), and one ``bincount``
    counts them all. The work arrays are kept between calls: allocating a few MB afresh per call costs
    more in page faults than the counting. So an instance is for one thread at a time.
    """

    def __init__(self, T: int = 3, colour: bool = True) -> None:
        if T < 1:
            raise ValueError("T must be >= 1")
        self.T, self.colour = T, colour
        self.n = 2 * T + 1
        self.channels = 5 if colour else 3
        cells = self.channels * self.n**3  # codes of one crop
        # crops per group: their codes must fit int16 (19 crops for T = 3 with colour)
        self.group = (2**15 - 1) // cells
        self.code_dtype = np.int16 if self.group >= 1 else np.intp
        self.group = max(1, min(self.group, 64))
        self._shape: tuple[int, int] = (0, 0)

    def _work(self, n: int, s: int) -> None:
        if self._shape[0] >= n and self._shape[1] == s:
            return
        size = n * self.channels * s * s
        self._x = np.empty((n, self.channels, s, s), np.int16)
        self._d = np.empty(size, np.int16)
        self._code = np.empty(size, self.code_dtype)
        self._bc = np.empty(size, np.int16)
        self._shape = (n, s)

    def counts(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3] or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 [N, 3, S, S], got {crops.dtype} {crops.shape}")
        N, s = crops.shape[0], crops.shape[2]
        out = np.zeros((N, len(COUNT_DIRECTIONS), self.channels, self.n**3), np.float32)
        if s > 3:
            self._work(min(N, self.group), s)
            for g in range(0, N, self.group):
                self._count(crops[g : g + self.group], out[g : g + self.group])
        return out

    def _count(self, crops: np.ndarray, out: np.ndarray) -> None:
        N, s = crops.shape[0], crops.shape[2]
        C, n, T = self.channels, self.n, self.T
        k = n**3
        x = self._x[:N]
        x[:, :3] = crops
        if self.colour:
            np.subtract(x[:, 0], x[:, 1], out=x[:, 3])
            np.subtract(x[:, 2], x[:, 1], out=x[:, 4])
        # each (crop, channel) counts into its own k bins; + T of a, b, c folded into the offset
        offset = (np.arange(N * C) * k + T * (n * n + n + 1)).astype(self.code_dtype).reshape(N, C, 1, 1)
        for j, (dy, dx) in enumerate(COUNT_DIRECTIONS):
            h, w = s - dy, s - abs(dx)
            d = self._d[: N * C * h * w].reshape(N, C, h, w)
            if dx >= 0:
                np.subtract(x[:, :, : s - dy, : s - dx], x[:, :, dy:, dx:], out=d)
            else:
                np.subtract(x[:, :, : s - dy, 1:], x[:, :, dy:, : s - 1], out=d)
            np.clip(d, -T, T, out=d)
            h2, w2 = h - 2 * dy, w - 2 * abs(dx)
            if dx >= 0:
                a, b, c = (d[:, :, i * dy : i * dy + h2, i * dx : i * dx + w2] for i in range(3))
            else:
                a, b, c = (d[:, :, i * dy : i * dy + h2, 2 - i : 2 - i + w2] for i in range(3))
            size = N * C * h2 * w2
            code = self._code[:size].reshape(N, C, h2, w2)
            np.multiply(a, n * n, out=code)
            code += offset
            bc = self._bc[:size].reshape(N, C, h2, w2)
            np.multiply(b, n, out=bc)
            bc += c
            code += bc
            out[:, j] = np.bincount(code.reshape(-1), minlength=N * C * k).reshape(N, C, k)
