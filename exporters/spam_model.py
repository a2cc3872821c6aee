"""The residual-statistics encoder: SPAM per crop, a fitted linear map, a logistic detection head.

No network is trained. Per 64x64 crop of the runtime's grid the graph computes the SPAM features
of :func:`lida_plugin.residual.colour_spam_features` (R, G, B, R - G, B - G: 3,430 values, ``T = 3``;
with ``colour=False`` those of :func:`lida_plugin.residual.spam_features`, 2,058), subtracts the train-split
mean and applies a fitted linear map to ``D`` dimensions, then L2-normalises: the contract's
``embedding`` output. The map (:func:`fit_map`) is fitted on the **train split** crops, labelled
by class (each generator, and all real photos as one class): z-score, PCA to ``pca_dim``,
within-class whitening (eigenvalues floored at ``eps`` x the largest), then the ``dim`` leading
principal axes of the whitened train crops. One more column is appended (:func:`detection_column`):
the weights of a logistic regression of generated-vs-real on the z-scored image-mean SPAM of the
train split, scaled so that its per-crop value has ``det_column`` times the RMS norm of the other
coordinates; it carries into the embedding the detection signal that the whitening and the per-crop
L2 normalisation would otherwise discard (held-out detection AUC of the head 0.973 without it,
0.992 with it; Rank-1 rose too, see docs/training.md). The z-score and every projection fold
into one ``[F, D]`` matrix, ``D = dim + 1``. Thresholds: detection at ``fpr`` with confidence
``fpr_confidence`` and open set at ``open_unknown_accept`` (:func:`lida_plugin.detect.calibrate_threshold`).

The detection head (:func:`fit_head`) is an L2-regularised logistic regression on the image
embedding (the runtime's L2-normalised mean of crop embeddings), fitted on the train split
(generated vs real, classes weighted equally) and carried in ``lida.detection_head``; its
threshold is calibrated on the held-out real photos at the stated FPR with
:func:`lida_plugin.detect.calibrate_threshold`, the same rule as every other export.

The graph (:func:`build_graph`, ONNX opset 18, no torch): ``Cast`` to int32 (with ``colour``, two
``Slice``/``Sub`` pairs and a ``Concat`` make the C = 5 channels), per direction ``s`` of each
(s, -s) pair four ``Slice``s, ``Sub`` and ``Clip`` to +-T, the triplet code ``(a*7+b)*7+c`` plus a
per-channel offset, ``ScatterElements(reduction="add")`` into ``[N, C*343]`` counts, and the counts
of ``-s`` by a reversing ``Slice`` and a ``Transpose`` of those (the same windows read backwards); then the row sums
(denominators), ``Div``, the mean over the 4 directions of each block, ``Sub`` mean, ``MatMul``, L2. It reads the
full pixel value, so the model declares ``lida.input_bits = 8``. The histograms sit in the else branch of an
``If``: a caller may feed the counts instead (the optional input ``spam_counts``, the contract's ``spam-counts``
feature stage, ``lida.counts_input``), which the runtime computes with numpy on the CPU at under half the cost.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lida_plugin.contract import COUNTS_NAME, INPUT_NAME, OUTPUT_NAME, ModelInfo, parse_metadata
from lida_plugin.detect import ai_scores, calibrate_threshold
from lida_plugin.fingerprint import extract_crops
from lida_plugin.residual import DIAGONAL, STRAIGHT, CropCounter, colour_spam_features, spam_dim, spam_features

from .export import family_margin, open_set_threshold

LEGACY = {
    "colour": False,
    "fpr_confidence": 0.0,
    "open_unknown_accept": 0.0,
    "zoo_every": 0,
    "family_wrong": 0.0,
    "det_resize_copies": 0,
    "det_rzoo": 0,
    "det_camera_copies": 0,
    "camera_methods": ("bilinear", "mhc"),
    "camera_noise": True,
    "det_jpeg_copies": 0,
    "det_noise_copies": 0,
    "det_sharpen_copies": 0,
    "sharpen_generated_only": False,
    "noise_sd": (0.25, 1.25),
    "noise_generated": False,
    "head_noise": False,
    "column_noise": True,
}  # recipe fields the first model did not have, at its values
#: the Pillow filters of the resized training copies (lida_plugin.lossy.resized; Lanczos is left for evaluation:
#: a filter no fit saw)
RESIZE_FILTERS = ("bicubic", "bilinear", "box", "hamming")
PARITY_TOL = 1e-4
#: the version-2 head's noise basis (lida_plugin.contract.noise_head_features): hinges at these noise floors, capped
NOISE_KNOTS, NOISE_CAP = (0.4, 0.6, 0.8, 1.0, 1.2), 1.5
#: the versions of each held-out real photo a noise-reading head's threshold is calibrated on, besides the
#: original: Gaussian noise of these sd (grey levels), independent per channel, and ``mono`` the same on all three
CALIBRATION_NOISE = ((0.5, False), (0.75, False), (1.0, False), (1.0, True))


@dataclass(frozen=True)
class SpamRecipe:
    """Everything that decides the model (recorded in ``lida.training``)."""

    T: int = 3
    colour: bool = True  # SPAM of R - G and B - G too (lida_plugin.residual.colour_spam_features)
    crop: int = 64
    crop_count: int = 16
    align: int = 8
    pca_dim: int = 256
    eps: float = 0.01
    dim: int = 128
    head_l2: float = 3e-4  # the version-1 heads: 1e-2 (VERSION1)
    fpr: float = 0.05
    fpr_confidence: float = 0.9  # the stated FPR holds with this confidence (calibrate_threshold)
    # open-set threshold: an unregistered generator named at most this often (leave-one-out on the train
    # split, at fpr_confidence); 0: the threshold of best balanced accuracy (the first model's rule)
    open_unknown_accept: float = 0.05
    det_column: float = 0.2  # weight of the detection column appended to the map (0: none)
    det_l2: float = 1e-3
    # also fit the map on every k-th serving crop of the generator zoo (exporters/zoo.py: the train-split
    # real photos through 15 known pipelines, each a class); 0: not (docs/training.md, "The generator zoo")
    zoo_every: int = 0
    # name a family alone below the open-set threshold (lida.family_margin): an image of an unregistered family
    # gets a wrong family at most this often, at fpr_confidence (leave-one-family-out, train split); 0: never,
    # the default: at 0.05 the robustness gate let families through on half-size images (docs/evaluation.md)
    family_wrong: float = 0.0
    # also fit the detection column and head on this many resized copies of every train image (a random
    # factor in [0.4, 0.9], a random filter of RESIZE_FILTERS): a downscaled photo is still real; 0: not, the
    # models before 2026-12-02 (docs/evaluation.md, "Real photos downscaled")
    det_resize_copies: int = 1
    # also fit the detection column and head on the images of this many random decoders (exporters/rzoo.py, 16
    # of the fit's real photos each), labelled generated; 0: not (docs/training.md, "Random decoders")
    det_rzoo: int = 0
    # also fit the detection column and head on this many camera-processed copies of every train image
    # (exporters/camera.py: CFA demosaicing, unsharp mask, noise; labels kept); 0: not, the models before
    # 2026-12-03 (docs/evaluation.md, "Camera originals")
    det_camera_copies: int = 0
    camera_methods: tuple[str, ...] = ("bilinear", "mhc")  # the copies' demosaicing (camera.demosaic)
    camera_noise: bool = True  # the copies may carry noise
    # also fit the detection column and head on this many JPEG round trips of every train image (quality 70-98,
    # 4:2:0 or 4:4:4, decoded back: what a PNG made from a JPEG holds); 0: not (docs/evaluation.md, "JPEG history")
    det_jpeg_copies: int = 0
    # also fit the detection column and head on this many noised copies of every train real image (Gaussian noise,
    # sd uniform in noise_sd, independent per channel or the same on all three; labels kept): light noise or a
    # dithered export does not make a photo generated; 0: not, the models before 2026-12-08 (docs/evaluation.md,
    # "Light noise", "A head that reads the noise floor")
    det_noise_copies: int = 3
    noise_sd: tuple[float, float] = (0.25, 2.0)
    noise_generated: bool = True  # the generated train images get noised copies too (labels kept)
    # the head also reads each image's colour noise floor (lida_plugin.noisegate.noise_score; a version-2 head:
    # a shift and a change of direction with the noise, NOISE_KNOTS, NOISE_CAP), and its threshold is calibrated
    # on the held-out real photos and noised versions of them (CALIBRATION_NOISE); False: a version-1 head
    # calibrated on the originals, the models before 2026-12-08 (VERSION1; docs/evaluation.md, "Leave-real-set-out
    # with the version-2 head")
    head_noise: bool = True
    # also fit the detection column and head on this many sharpened copies of every train image, generated and real
    # (an unsharp mask, amount uniform in [0.3, 1.5], sigma in [0.6, 2]: sharpen_plan; labels kept): sharpening does
    # not make a generated image real; 0: not, the bundled model (measured, not kept: docs/evaluation.md, "Sharpening")
    det_sharpen_copies: int = 0
    sharpen_generated_only: bool = False  # the sharpened copies are of the generated train images only
    # the detection column (part of the retrieval space) is fitted on the noised copies too; False: on the items and
    # the other copies only, so the noised copies teach the head and leave the retrieval space as it was
    column_noise: bool = True


#: the recipe bundled from 2026-12-02 to 2026-12-07 (``lida-spamc-t3-wcw129-704e36c937``): a version-1 detection
#: head (L2 1e-2) on the originals and one resized copy of each train image, no noised copies. The detection probes
#: (``python -m lida_exporters.probes``) that measured it start from it; ``lida-train spam --det-noise-copies 0
#: --noise-sd 0.25,1.25 --no-noise-generated --no-head-noise --head-l2 0.01`` fits it again
VERSION1 = SpamRecipe(
    head_l2=1e-2,
    det_noise_copies=0,
    noise_sd=(0.25, 1.25),
    noise_generated=False,
    head_noise=False,
)


# -- features ------------------------------------------------------------------------------------
def crop_features(crops: np.ndarray, T: int = 3, colour: bool = False) -> np.ndarray:
    """SPAM of each crop ``uint8 [K, 3, S, S]`` -> ``float32 [K, spam_dim(T, colour)]`` (numpy reference)."""
    f = colour_spam_features if colour else spam_features
    return np.stack([f(np.ascontiguousarray(c.transpose(1, 2, 0)), T) for c in crops])


def image_crops(pixels: np.ndarray, r: SpamRecipe) -> np.ndarray:
    return extract_crops(pixels, r.crop, r.crop_count, r.align)


# -- the linear map --------------------------------------------------------------------------------
def _eig_desc(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    return np.maximum(w[order], 0.0), v[:, order]


def fit_map(
    x: np.ndarray, labels: Sequence[str], r: SpamRecipe, standardize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [F], proj [F, D])`` so that an embedding is ``normalize((x - mean) @ proj)``; without
    ``standardize`` the columns are used at the scale they come in (the feature probe weights blocks)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    mu = x.mean(0)
    sd = x.std(0) if standardize else np.ones(x.shape[1])
    sd = np.where(sd > 1e-8, sd, 1.0)  # constant features (never-seen triplets) pass as zeros
    z = (x - mu) / sd
    _, v = _eig_desc(np.cov(z.T))
    pca = v[:, : r.pca_dim]
    p = z @ pca
    within = np.zeros((pca.shape[1], pca.shape[1]))
    for c in np.unique(y):
        pc = p[y == c]
        if len(pc) > 1:
            d = pc - pc.mean(0)
            within += d.T @ d
    within /= len(p)
    w, u = _eig_desc(within)
    wh = u @ np.diag(1.0 / np.sqrt(w + r.eps * w[0])) @ u.T
    q = p @ wh
    _, v2 = _eig_desc(np.cov(q.T))
    proj = (pca @ wh @ v2[:, : r.dim]) / sd[:, None]
    return mu.astype(np.float32), proj.astype(np.float32)


def detection_column(
    feats: np.ndarray, counts: Sequence[int], generated: np.ndarray, train: np.ndarray, mean: np.ndarray,
    proj: np.ndarray, r: SpamRecipe,
) -> np.ndarray:  # fmt: skip
    """The map's extra column (see the module docstring): ``[F]`` float32, fitted on ``train`` images."""
    b = np.cumsum([0, *counts])
    img = np.stack([feats[b[i] : b[i + 1]].mean(0) for i in range(len(counts))]).astype(np.float64)
    mu, sd = img[train].mean(0), img[train].std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    w = np.asarray(fit_head((img[train] - mu) / sd, generated[train], r.det_l2)["w"]) / sd
    owner = np.repeat(np.arange(len(counts)), counts)
    ct = train[owner]
    x = feats[ct] - mean
    rms = float(np.sqrt(((x @ proj) ** 2).sum(1).mean()))
    return (r.det_column * rms / float((x @ w.astype(np.float32)).std()) * w).astype(np.float32)


def fit_detection_stage(
    feats: np.ndarray, counts: Sequence[int], generated: np.ndarray, fit: np.ndarray, mean: np.ndarray,
    proj: np.ndarray, r: SpamRecipe, noise: np.ndarray | None = None, column_fit: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:  # fmt: skip
    """The detection column (when ``r.det_column``) appended to the map, then the head, both fitted on the
    images ``fit`` marks (crop features ``feats``, ``counts`` crops per image; ``noise``: their noise floors, for
    a head that reads them, ``r.head_noise``; ``column_fit``: the images the column is fitted on instead, when
    given); returns ``(proj with the column, every image's embedding, the head)``."""
    if r.det_column > 0:
        col = detection_column(feats, counts, generated, fit if column_fit is None else column_fit, mean, proj, r)
        proj = np.hstack([proj, col[:, None]])
    emb = image_embeddings(apply_map(feats, mean, proj), counts)
    if not r.head_noise:
        return proj, emb, fit_head(emb[fit], generated[fit], r.head_l2)
    if noise is None:
        raise ValueError("a head that reads the noise floor (head_noise) needs the images' noise floors")
    return proj, emb, fit_noise_head(emb[fit], np.asarray(noise)[fit], generated[fit], r.head_l2)


def apply_map(x: np.ndarray, mean: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """Crop embeddings (unit rows) from crop features, in float32 like the graph."""
    e = (np.asarray(x, np.float32) - mean) @ proj
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def image_embeddings(crop_emb: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """The runtime's image embedding: the L2-normalised mean of each image's crop embeddings."""
    b = np.cumsum([0, *counts])
    m = np.stack([crop_emb[a:c].mean(0) for a, c in zip(b[:-1], b[1:], strict=True)])
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


# -- the detection head ------------------------------------------------------------------------------
def fit_head(emb: np.ndarray, generated: np.ndarray, l2: float = 1e-2, iters: int = 50) -> dict:
    """Logistic regression ``sigmoid(w.e + b)`` (Newton's method, L2 ``l2`` on ``w``, both classes
    weighted to equal total weight); returns the ``lida.detection_head`` dict."""
    x = np.asarray(emb, dtype=np.float64)
    y = np.asarray(generated, dtype=np.float64)
    n, d = x.shape
    sw = np.where(y > 0, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    xb = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 0.5 * (1 + np.tanh(0.5 * (xb @ theta)))
        g = xb.T @ (sw * (p - y)) + reg * theta
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-12 * np.eye(d + 1)
        step = np.linalg.solve(h, g)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return {"kind": "logistic", "version": 1, "input": "image_embedding",
            "w": [round(float(v), 8) for v in theta[:d]], "b": round(float(theta[d]), 8)}  # fmt: skip


def fit_noise_head(emb: np.ndarray, noise: np.ndarray, generated: np.ndarray, l2: float = 1e-2) -> dict:
    """:func:`fit_head` on :func:`lida_plugin.contract.noise_head_features`: the version-2 ``lida.detection_head``
    dict."""
    from lida_plugin.contract import noise_head_features

    d, j = np.asarray(emb).shape[1], len(NOISE_KNOTS) + 1
    h = fit_head(noise_head_features(emb, noise, NOISE_CAP, NOISE_KNOTS), generated, l2)
    w = h["w"]
    return {"kind": "logistic", "version": 2, "input": "image_embedding+noise_floor", "w": w[:d], "b": h["b"],
            "noise": {"score": "colour-noise-floor", "version": 1, "cap": NOISE_CAP, "knots": list(NOISE_KNOTS),
                      "v": w[d : d + j], "u": w[d + j :]}}  # fmt: skip


# -- the ONNX graph ------------------------------------------------------------------------------------
def build_graph(
    mean: np.ndarray, proj: np.ndarray, r: SpamRecipe, metadata: dict[str, str] | None = None, counts_input: bool = True
):
    """The contract model as an ``onnx.ModelProto`` (opset 18).

    With ``counts_input`` the graph also has the optional input :data:`COUNTS_NAME` (the contract's
    ``spam-counts`` stage, :data:`lida_plugin.contract.K_COUNTS`): ``float32 [N, 4, C, 343]``, the joint
    counts of :class:`lida_plugin.residual.CropCounter`, defaulting to an empty initializer. An ``If`` takes
    them when they are not empty (the crops input is then ignored: feed ``[0, 3, S, S]``) and otherwise
    histograms the crops itself, so a caller that feeds only crops gets the same embedding."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n7 = 2 * r.T + 1
    blk = n7**3
    s = r.crop
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, ins: list[str], out: str, **kw) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, **kw))
        return out

    x = node("Cast", [INPUT_NAME], "x_i32", to=TensorProto.INT32)
    nc = 5 if r.colour else 3
    if r.colour:  # channels R, G, B, R - G, B - G (lida_plugin.residual.colour_channels)
        const("axis_c", np.array([1], np.int64))
        for nm, (c0, c1) in (("ch_r", (0, 1)), ("ch_g", (1, 2)), ("ch_b", (2, 3))):
            const(nm + "_st", np.array([c0], np.int64))
            const(nm + "_en", np.array([c1], np.int64))
            node("Slice", [x, nm + "_st", nm + "_en", "axis_c"], nm)
        rg = node("Sub", ["ch_r", "ch_g"], "ch_rg")
        bg = node("Sub", ["ch_b", "ch_g"], "ch_bg")
        x = node("Concat", [x, rg, bg], "x_colour", axis=1)
    const("axes_hw", np.array([2, 3], np.int64))
    const("lo", np.array(-r.T, np.int32))
    const("hi", np.array(r.T, np.int32))
    const("n7", np.array(n7, np.int32))
    # the channel's block offset plus the +T shift of each clipped difference: (a+T)*49 + (b+T)*7 + (c+T)
    const("chan_off", (np.arange(nc, dtype=np.int32) * blk + r.T * (n7 * n7 + n7 + 1)).reshape(1, nc, 1, 1))
    const("flat_shape", np.array([0, -1], np.int64))
    const("one_f", np.array(1.0, np.float32))

    def sl(src: str, nm: str, y: tuple[int, int], xr: tuple[int, int]) -> str:
        const(nm + "_st", np.array([y[0], xr[0]], np.int64))
        const(nm + "_en", np.array([y[1], xr[1]], np.int64))
        return node("Slice", [src, nm + "_st", nm + "_en", "axes_hw"], nm)

    def triplet_code(dy: int, dx: int, tag: str) -> str:
        """Per 4-pixel window along (dy, dx) >= (0, -1): the code a*49 + b*7 + c + 57T + channel offset of
        its three clipped differences, int32 [N, C*windows]. The difference image D(q) = I(q) - I(q + s) is
        made once and sliced three times (a = D(q), b = D(q + s), c = D(q + 2s)), as in _spam_blocks."""
        cols = ((0, s - dx), (dx, s)) if dx >= 0 else ((1, s), (0, s - 1))  # columns of q and of q + s
        p, q = sl(x, f"{tag}_p", (0, s - dy), cols[0]), sl(x, f"{tag}_q", (dy, s), cols[1])
        d = node("Sub", [p, q], f"{tag}_d")
        d = node("Clip", [d, "lo", "hi"], f"{tag}_dc")
        h2, w2 = s - dy, s - abs(dx)
        if dx >= 0:
            win = [((k * dy, h2 - (2 - k) * dy), (k * dx, w2 - (2 - k) * dx)) for k in range(3)]
        else:
            win = [((k * dy, h2 - (2 - k) * dy), (2 - k, w2 - k)) for k in range(3)]
        a, b, c = (sl(d, f"{tag}_w{k}", *win[k]) for k in range(3))
        ab = node("Add", [node("Mul", [a, "n7"], f"{tag}_a7"), b], f"{tag}_ab")
        code = node("Add", [node("Mul", [ab, "n7"], f"{tag}_ab7"), c], f"{tag}_abc")
        code = node("Add", [code, "chan_off"], f"{tag}_code")
        return node("Reshape", [code, "flat_shape"], f"{tag}_idx")

    # The reverse of a direction reads the same 4-pixel windows backwards: N_-s[a, b, c] = N_s[-c, -b, -a]
    # (joint counts, as in lida_plugin.residual._spam_blocks), so only s is histogrammed and -s is data
    # movement: reversing all three 7-axes of a table is reversing its 343 values (a Slice with step -1),
    # then a Transpose swaps a and c (cheaper in ORT than a Gather of the same elements).
    # The eight count tables are normalised and averaged together: few, larger kernels (ORT's cost per
    # node counts at the worker's 8 crops a call).
    graph_nodes = nodes
    if counts_input:  # the histograms go into the else branch of an If on the counts input being empty
        nodes = []
    node("Shape", [INPUT_NAME], "n_only", start=0, end=1)
    const("hist_cols", np.array([nc * blk], np.int64))
    node("Concat", ["n_only", "hist_cols"], "hist_shape", axis=0)
    node("ConstantOfShape", ["hist_shape"], "hist_zero", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
    const("rev_st", np.array([-1], np.int64))
    const("rev_en", np.array([-(2**62)], np.int64))
    const("rev_ax", np.array([4], np.int64))
    const("rev_step", np.array([-1], np.int64))
    dirs = [d for blkdirs in (STRAIGHT, DIAGONAL) for d in blkdirs[0::2]]  # s of each (s, -s) pair
    const("fw_shape", np.array([0, 1, 1, nc, blk], np.int64))
    fws = []
    for k, (dy, dx) in enumerate(dirs):
        idx = triplet_code(dy, dx, f"d{k}")
        ones = node("ConstantOfShape", [node("Shape", [idx], f"d{k}_shape")], f"d{k}_ones",
                    value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0]))  # fmt: skip
        cnt = node("ScatterElements", ["hist_zero", idx, ones], f"d{k}_cnt", axis=1, reduction="add")
        fws.append(node("Reshape", [cnt, "fw_shape"], f"d{k}_cnt5"))
    if not counts_input:
        fw = node("Concat", fws, "counts_fw", axis=1)  # [N, 4, 1, C, 343]
    else:
        node("Concat", fws, "counts_fw_graph", axis=1)
        histogram, nodes = nodes, graph_nodes
        const("fw5_shape", np.array([0, len(dirs), 1, nc, blk], np.int64))
        counted = [helper.make_node("Reshape", [COUNTS_NAME, "fw5_shape"], ["counts_fw_fed"], name="counts_fw_fed")]
        branch = {}
        for tag, body, out in (("fed", counted, "counts_fw_fed"), ("graph", histogram, "counts_fw_graph")):
            branch[tag] = helper.make_graph(
                body, f"counts_{tag}", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
            )
        const("counts_none", np.array(0, np.int64))
        fed = node("Greater", [node("Size", [COUNTS_NAME], "counts_size"), "counts_none"], "counts_fed")
        fw = node("If", [fed], "counts_fw", then_branch=branch["fed"], else_branch=branch["graph"])
    flip = node("Slice", [fw, "rev_st", "rev_en", "rev_ax", "rev_step"], "counts_flip")
    const("rev_cube", np.array([0, len(dirs), nc, n7, n7, n7], np.int64))
    cube = node("Reshape", [flip, "rev_cube"], "counts_cube")
    cube = node("Transpose", [cube], "counts_cube_t", perm=[0, 1, 2, 5, 4, 3])  # [a, b, c] -> [c, b, a]
    const("bw_shape", np.array([0, len(dirs), 1, nc, blk], np.int64))
    bw = node("Reshape", [cube, "bw_shape"], "counts_bw")
    both = node("Concat", [fw, bw], "counts_8", axis=2)  # [N, 4, 2, C, 343]: s, then -s
    const("tab_shape", np.array([0, 2 * len(dirs), nc, n7 * n7, n7], np.int64))
    tab = node("Reshape", [both, "tab_shape"], "counts_tab")
    const("axis4", np.array([4], np.int64))
    den = node("Clip", [node("ReduceSum", [tab, "axis4"], "den", keepdims=1), "one_f"], "den1")  # 0/1 = 0 if unseen
    prob = node("Div", [tab, den], "probs")
    # [N, block (straight, diagonal), its 4 directions (s, -s, s', -s'), C, 343]: the mean over axis 2
    const("blk4_shape", np.array([0, 2, 4, nc, blk], np.int64))
    const("axis2", np.array([2], np.int64))
    tot = node("ReduceSum", [node("Reshape", [prob, "blk4_shape"], "probs_blk"), "axis2"], "blk_sum", keepdims=0)
    const("quarter", np.array(0.25, np.float32))
    mean4 = node("Mul", [tot, "quarter"], "blk_mean")  # [N, 2, C, 343]
    feat = node("Transpose", [mean4], "spam_blocks", perm=[0, 2, 1, 3])  # [N, C, 2, 343]: channel, then block
    const("feat_shape", np.array([0, spam_dim(r.T, r.colour)], np.int64))
    feat = node("Reshape", [feat, "feat_shape"], "spam")
    const("map_mean", np.asarray(mean, np.float32))
    const("map_proj", np.asarray(proj, np.float32))
    e = node("MatMul", [node("Sub", [feat, "map_mean"], "centred"), "map_proj"], "projected")
    const("axis1", np.array([1], np.int64))
    nrm = node("ReduceL2", [e, "axis1"], "norm", keepdims=1)
    const("tiny", np.array(1e-12, np.float32))
    node("Div", [e, node("Max", [nrm, "tiny"], "norm_safe")], OUTPUT_NAME)
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["n", 3, s, s])]
    if counts_input:  # optional: an input with an initializer is one a caller may override
        inputs.append(helper.make_tensor_value_info(COUNTS_NAME, TensorProto.FLOAT, ["n", len(dirs), nc, blk]))
        const(COUNTS_NAME, np.zeros((0, len(dirs), nc, blk), np.float32))
    graph = helper.make_graph(
        nodes, "lida-spam", inputs,
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", proj.shape[1]])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="lida-train spam")
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    return model


def counts_metadata(r: SpamRecipe) -> dict:
    """``lida.counts_input`` of a graph built with ``counts_input`` (lida_plugin.contract, "Feature stage")."""
    return {"kind": "spam-counts", "version": 1, "input": COUNTS_NAME, "T": r.T, "channels": 5 if r.colour else 3}


def spam_graph_features(r: SpamRecipe):
    """An ORT session computing only the SPAM features (identity map), for the parity test."""
    import onnxruntime as ort

    f = spam_dim(r.T, r.colour)
    m = build_graph(np.zeros(f, np.float32), np.eye(f, dtype=np.float32), r)
    # drop the L2 step: expose the pre-normalisation features as an extra output
    from onnx import TensorProto, helper

    m.graph.output.append(helper.make_tensor_value_info("spam", TensorProto.FLOAT, ["n", f]))
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


# -- fit + export --------------------------------------------------------------------------------------
def _ort_threads() -> object:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    return o


def corpus_crops(entries, r: SpamRecipe, progress: bool = True) -> tuple[np.ndarray, list[int]]:
    """The serving crops of every corpus entry (decoded one at a time), and each one's crop count."""
    from tqdm import tqdm

    from lida_plugin.decode import decode_file

    crops, counts = [], []
    for e in tqdm(entries, desc="crops", unit="img", disable=not progress, mininterval=2.0):
        c = image_crops(decode_file(e.path).pixels, r)
        crops.append(c)
        counts.append(len(c))
    return np.concatenate(crops), counts


def zoo_crops(cache: Path, r: SpamRecipe = SpamRecipe()) -> tuple[np.ndarray, np.ndarray]:
    """``(crops uint8 [Z,3,S,S], pipeline label per crop)``: the serving crops (``r``'s geometry) of
    the generator zoo's images (made from the train-split real photos by
    :func:`lida_exporters.zoo.cached_zoo`), both cached in ``cache``."""
    cache = Path(cache)
    key = f"{r.crop}-{r.crop_count}-{r.align}"
    f, fl = cache / f"probe-zoo-crops-{key}.npy", cache / f"probe-zoo-labels-{key}.npy"
    if f.is_file() and fl.is_file():
        return np.load(f), np.load(fl)
    from . import data as D
    from .train import DEFAULT_DATA, Recipe, pretrain_groups

    names, groups = pretrain_groups(Recipe(pretrain="zoo"), D.load_folder(DEFAULT_DATA), cache)
    cs, labs = [], []
    for name, imgs in zip(names, groups, strict=True):
        if name.startswith("zoo:"):
            for im in imgs:
                c = image_crops(im, r)
                cs.append(c)
                labs += [name] * len(c)
    crops, labels = np.concatenate(cs), np.array(labs)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, crops)
    np.save(fl, labels)
    return crops, labels


def rzoo_crops(
    cache: Path, n: int, per_decoder: int = 16, seed: int = 0, r: SpamRecipe = SpamRecipe()
) -> tuple[np.ndarray, np.ndarray]:
    """``(crops uint8 [Z,3,S,S], decoder label per crop)``: the serving crops of ``n`` random decoders
    (:mod:`lida_exporters.rzoo`), each run on ``per_decoder`` train-split real photos; cached in ``cache``."""
    from . import data as D
    from . import rzoo
    from .train import DEFAULT_DATA

    reals = [it for it in D.load_folder(DEFAULT_DATA) if it.kind == "real" and it.split == "train"]
    images, names = rzoo.cached([it.pixels for it in reals], [it.relpath for it in reals], n, per_decoder, seed, cache)
    cs = [image_crops(im, r) for im in images]
    return np.concatenate(cs), np.repeat(np.array(names), [len(c) for c in cs])


def corpus_features(entries, r: SpamRecipe, cache: Path | None = None, progress: bool = True):
    """``(crops uint8 [C,3,S,S], SPAM features [C, F], crop counts per entry)``, cached by recipe and file list."""
    from tqdm import tqdm

    files = [(e.relpath, e.path.stat().st_size) for e in entries]
    geometry = [r.T, r.crop, r.crop_count, r.align] + (["colour"] if r.colour else [])
    key = hashlib.sha256(json.dumps([*geometry, files]).encode()).hexdigest()
    f = cache / f"spam-{key[:16]}.npz" if cache is not None else None
    if f is not None and f.is_file():
        z = np.load(f)
        return z["crops"], z["feats"], z["counts"].tolist()
    crops, counts = corpus_crops(entries, r, progress)
    steps = tqdm(range(0, len(crops), 256), desc="spam", unit="x256", disable=not progress, mininterval=2.0)
    feats = np.concatenate([crop_features(crops[i : i + 256], r.T, r.colour) for i in steps])
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, crops=crops, feats=feats, counts=np.asarray(counts))
    return crops, feats, counts


def resize_plan(train_idx: Sequence[int], copies: int, seed: int = 0) -> list[tuple[int, float, str]]:
    """``(item index, factor, filter)`` of each resized training copy (seeded)."""
    rng = np.random.default_rng(seed)
    names = sorted(RESIZE_FILTERS)  # the order the bundled model's copies were drawn in
    return [(int(i), float(rng.uniform(0.4, 0.9)), names[int(rng.integers(len(names)))])
            for _ in range(copies) for i in train_idx]  # fmt: skip


@dataclass(frozen=True)
class _Resize:
    """A resized training copy as a :func:`processed_copy_features` op."""

    factor: float
    method: str

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        from lida_plugin.lossy import resized

        return resized(pixels, self.factor, self.method, min_side=64)

    def describe(self) -> str:
        return f"resize-{self.factor!r}-{self.method}"


@dataclass(frozen=True)
class JpegRoundTrip:
    """A JPEG round trip (Pillow's encoder, then the runtime's decoder) as a :func:`processed_copy_features` op."""

    quality: int
    subsampling: int = 2  # 0: 4:4:4, 2: 4:2:0

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        from lida_plugin.decode import decode_bytes
        from lida_plugin.lossy import jpeg_bytes

        return decode_bytes(jpeg_bytes(pixels[..., :3], self.quality, self.subsampling), "jpeg-copy").pixels

    def describe(self) -> str:
        return f"jpeg-q{self.quality}-s{self.subsampling}"


def jpeg_plan(train_idx: Sequence[int], copies: int, seed: int = 0) -> list[tuple[int, JpegRoundTrip]]:
    """``(item index, round trip)`` of each JPEG training copy (seeded): quality 70-98, 4:2:0 or 4:4:4."""
    rng = np.random.default_rng(seed)
    return [(int(i), JpegRoundTrip(int(rng.integers(70, 99)), int(rng.choice([0, 2]))))
            for _ in range(copies) for i in train_idx]  # fmt: skip


@dataclass(frozen=True)
class Noise:
    """Gaussian noise of ``sd`` grey levels (independent per channel, or the same on all three when ``mono``),
    seeded, rounded and clipped to 8 bits, as a :func:`processed_copy_features` op."""

    sd: float
    mono: bool = False
    seed: int = 0

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        from .camera import noisy

        return noisy(np.asarray(pixels)[..., :3], self.sd, self.seed, self.mono)

    def describe(self) -> str:
        return f"noise-{self.sd!r}-{'mono' if self.mono else 'rgb'}-{self.seed}"


@dataclass(frozen=True)
class Sharpen:
    """An unsharp mask (:func:`lida_exporters.camera.unsharp`: ``x + amount (x - gaussian(x, sigma))``, rounded
    and clipped to 8 bits), as a :func:`processed_copy_features` op."""

    amount: float
    sigma: float

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        from .camera import unsharp

        return unsharp(np.asarray(pixels)[..., :3], self.amount, self.sigma)

    def describe(self) -> str:
        return f"unsharp-{self.amount!r}-{self.sigma!r}"


def sharpen_plan(train_idx: Sequence[int], copies: int, seed: int = 0) -> list[tuple[int, Sharpen]]:
    """``(item index, unsharp mask)`` of each sharpened training copy (seeded): amount uniform in [0.3, 1.5], sigma
    in [0.6, 2.0] (rounded to 3 decimals, so the cache key is stable)."""
    rng = np.random.default_rng(seed)
    return [(int(i), Sharpen(round(float(rng.uniform(0.3, 1.5)), 3), round(float(rng.uniform(0.6, 2.0)), 3)))
            for _ in range(copies) for i in train_idx]  # fmt: skip


def calibration_plan(idx: Sequence[int]) -> list[tuple[int, Noise]]:
    """``(item index, noise)`` of the noised versions a version-2 head's threshold is calibrated on: every
    ``CALIBRATION_NOISE`` version of each item in ``idx`` (the held-out real photos in the export), seed 4242."""
    return [(int(i), Noise(sd, mono, 4242)) for sd, mono in CALIBRATION_NOISE for i in idx]


def noise_plan(items, train_idx: Sequence[int], copies: int, sd: tuple[float, float] = (0.25, 1.25),
               generated: bool = False, seed: int = 0) -> list[tuple[int, Noise]]:  # fmt: skip
    """``(item index, noise)`` of each noised training copy (seeded): the train real images (and the generated
    ones when ``generated``), sd uniform in ``sd``, the same noise on all three channels one time in four."""
    rng = np.random.default_rng(seed)
    idx = [i for i in train_idx if generated or items[i].kind != "generated"]
    return [(int(i), Noise(float(rng.uniform(*sd)), bool(rng.random() < 0.25), int(rng.integers(2**31))))
            for _ in range(copies) for i in idx]  # fmt: skip


def resized_copy_features(items, plan, r: SpamRecipe, cache: Path | None = None, progress: bool = True):
    """``(SPAM crop features [C, F], crop counts)`` of the resized copies in ``plan``, cached by plan and files."""
    ops = [(i, _Resize(fac, flt)) for i, fac, flt in plan]
    return processed_copy_features(items, ops, r, cache, progress, tag="resized")


def _cached_features(f: Path | None, compute) -> tuple[np.ndarray, list[int]]:
    """``compute()``'s ``(features, counts)``, kept in the ``.npz`` file ``f`` (None: not cached)."""
    if f is not None and f.is_file():
        z = np.load(f)
        return z["feats"], z["counts"].tolist()
    feats, counts = compute()
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, feats=feats, counts=np.asarray(counts))
    return feats, counts


def processed_copies(items, plan, r: SpamRecipe, cache: Path | None = None, progress: bool = True,
                     tag: str = "copies") -> tuple[np.ndarray, list[int], np.ndarray]:  # fmt: skip
    """``(SPAM crop features [C, F], crop counts, noise floors [len(plan)])`` of ``plan``'s copies: ``(item index,
    op)`` pairs, ``op`` with ``apply(pixels)`` and ``describe()`` (e.g. :class:`lida_exporters.camera.CameraOps`).
    Each copy is decoded and made once; the floor is :func:`lida_plugin.noisegate.noise_score` of the crops the
    features read. Cached in one ``.npz`` by the ops' descriptions, the feature settings and the files (a cache
    file without floors, from before they were kept, is made again)."""
    from tqdm import tqdm

    from lida_plugin.decode import decode_file
    from lida_plugin.noisegate import noise_score

    files = [(e.relpath, e.path.stat().st_size) for e in items]
    ops = [(i, op.describe()) for i, op in plan]
    key = hashlib.sha256(json.dumps([r.T, r.crop, r.crop_count, r.align, r.colour, ops, files]).encode()).hexdigest()
    f = cache / f"spam-{tag}-{key[:16]}.npz" if cache is not None else None
    if f is not None and f.is_file():
        z = np.load(f)
        if "floors" in z.files:
            return z["feats"], z["counts"].tolist(), z["floors"]
    feats, counts, floors = [], [], []
    for i, op in tqdm(plan, desc=tag, unit="img", disable=not progress, mininterval=2.0):
        c = image_crops(op.apply(decode_file(items[i].path).pixels), r)
        feats.append(crop_features(c, r.T, r.colour))
        counts.append(len(c))
        floors.append(noise_score(c))
    out = np.concatenate(feats), counts, np.asarray(floors, dtype=np.float64)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, feats=out[0], counts=np.asarray(counts), floors=out[2])
    return out


def processed_copy_features(items, plan, r: SpamRecipe, cache: Path | None = None, progress: bool = True,
                            tag: str = "copies") -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """``(SPAM crop features [C, F], crop counts)`` of ``plan``'s copies: :func:`processed_copies` without the
    floors."""
    return processed_copies(items, plan, r, cache, progress, tag)[:2]


def image_noise_floors(crops: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """The noise floor (:func:`lida_plugin.noisegate.noise_score`) of each image's crops, ``[len(counts)]``."""
    from lida_plugin.noisegate import noise_score

    b = np.cumsum([0, *counts])
    return np.array([noise_score(crops[b[i] : b[i + 1]]) for i in range(len(counts))], dtype=np.float64)


def rzoo_features(items, photos_of: np.ndarray, n: int, r: SpamRecipe, cache: Path | None = None,
                   progress: bool = True) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """``(SPAM crop features [C, F], crop counts)`` of ``n`` random decoders' images (:mod:`lida_exporters.rzoo`,
    made from the real photos ``photos_of`` marks), cached by the decoders' images and the crop geometry."""
    from lida_plugin.decode import decode_file

    from . import rzoo

    idx = np.flatnonzero(photos_of)
    ids = [items[i].relpath for i in idx]
    key = hashlib.sha256(json.dumps([r.T, r.crop, r.crop_count, r.align, r.colour, n, ids]).encode()).hexdigest()

    def compute():
        photos = [decode_file(items[i].path).pixels for i in idx]
        images, _ = rzoo.cached(photos, ids, n, 16, 0, cache or Path("runs/cache"), progress=progress)
        cs = [image_crops(im, r) for im in images]
        return np.concatenate([crop_features(c, r.T, r.colour) for c in cs]), [len(c) for c in cs]

    return _cached_features(cache / f"spam-rzoo-{key[:16]}.npz" if cache is not None else None, compute)


class DetectionFitSet(NamedTuple):
    """What the detection column and head are fitted on (:func:`detection_fit_set`), one entry per image."""

    feats: np.ndarray  # crop features [C, F]
    counts: list[int]  # crops per image
    generated: np.ndarray  # bool
    fit: np.ndarray  # bool: in the fit
    noise: np.ndarray | None  # noise floors (r.head_noise), else None
    source: np.ndarray  # str: "item", or the copies' kind ("resized", "camera", "jpeg", "noise", "rzoo")

    def column_fit(self, r: SpamRecipe) -> np.ndarray | None:
        """The images the detection column is fitted on when that is not ``fit`` (``r.column_noise`` False: the
        noised copies left out), else None: :func:`fit_detection_stage`'s ``column_fit``."""
        return None if r.column_noise else self.fit & (self.source != "noise")


def detection_fit_set(items, feats, counts, fit: np.ndarray, r: SpamRecipe, cache: Path | None = None,
                      progress: bool = True, noise: np.ndarray | None = None) -> DetectionFitSet:  # fmt: skip
    """Every item (the ``fit`` ones in the fit), then ``r.det_resize_copies`` resized copies of every train item
    and ``r.det_camera_copies`` camera-processed and ``r.det_jpeg_copies`` JPEG round-tripped and
    ``r.det_sharpen_copies`` sharpened and
    ``r.det_noise_copies`` noised ones (each in the fit when its item is), then ``r.det_rzoo`` random decoders'
    images made from the fit's real photos. The noise floors (for ``r.head_noise``; else None) of the items are
    ``noise`` (:func:`image_noise_floors`), the copies' are computed with them (:func:`processed_copies`)."""
    if r.head_noise and noise is None:
        raise ValueError("head_noise needs the items' noise floors (image_noise_floors)")
    if r.head_noise and r.det_rzoo:
        raise ValueError("head_noise with det_rzoo: the random decoders' noise floors are not computed")
    gen = np.array([it.kind == "generated" for it in items])
    fit = np.asarray(fit, bool)
    parts = [(feats, list(counts), gen, fit, "item")]
    train_idx = [i for i, it in enumerate(items) if it.split == "train"]
    copies = []  # (plan of (item index, op), cache tag): each copy keeps its item's label and fit
    if r.det_resize_copies:
        copies.append(([(i, _Resize(f, m)) for i, f, m in resize_plan(train_idx, r.det_resize_copies)], "resized"))
    if r.det_camera_copies:
        from .camera import camera_plan

        plan = camera_plan(train_idx, r.det_camera_copies, methods=r.camera_methods, noise=r.camera_noise)
        copies.append((plan, "camera"))
    if r.det_jpeg_copies:
        copies.append((jpeg_plan(train_idx, r.det_jpeg_copies), "jpeg"))
    if r.det_sharpen_copies:
        idx = [i for i in train_idx if gen[i]] if r.sharpen_generated_only else train_idx
        copies.append((sharpen_plan(idx, r.det_sharpen_copies), "sharpened"))
    if r.det_noise_copies:
        plan = noise_plan(items, train_idx, r.det_noise_copies, tuple(r.noise_sd), r.noise_generated)
        copies.append((plan, "noise"))
    floors = [np.asarray(noise, np.float64)] if r.head_noise else []
    for plan, tag in copies:
        cf, cc, cn = processed_copies(items, plan, r, cache, progress, tag=tag)
        src = [i for i, _ in plan]
        parts.append((cf, cc, gen[src], fit[src], tag))
        if r.head_noise:
            floors.append(cn)
    if r.det_rzoo:
        zf, zc = rzoo_features(items, fit & ~gen, r.det_rzoo, r, cache, progress)
        parts.append((zf, zc, np.ones(len(zc), bool), np.ones(len(zc), bool), "rzoo"))
    return DetectionFitSet(
        np.concatenate([p[0] for p in parts]),
        [c for p in parts for c in p[1]],
        np.concatenate([p[2] for p in parts]),
        np.concatenate([p[3] for p in parts]),
        np.concatenate(floors) if r.head_noise else None,
        np.concatenate([np.full(len(p[1]), p[4]) for p in parts]),
    )


def eval_label(item) -> str:
    """The class an item belongs to in ``lida eval`` (every real set is one class, ``real``)."""
    return "real" if item.kind == "real" else item.label


def fit_and_export(
    items, out: str | Path, r: SpamRecipe = SpamRecipe(), model_id: str | None = None, progress: bool = True,
    cache: Path | None = None,
) -> tuple[Path, ModelInfo, dict]:  # fmt: skip
    """Fit the map and the head on the train split of ``items`` (corpus entries:
    :func:`lida_plugin.evaluate.corpus.load_corpus`), calibrate, export, check parity."""
    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    all_crops, feats, counts = corpus_features(items, r, cache, progress)
    owner = np.repeat(np.arange(len(items)), counts)
    train = np.array([it.split == "train" for it in items])
    crop_train = train[owner]
    crop_labels = [eval_label(items[i]) for i in owner[crop_train]]
    fit_x = feats[crop_train]
    if r.zoo_every:
        zc, zl = zoo_crops(cache or Path("runs/cache"), r)
        fit_x = np.concatenate([fit_x, crop_features(zc[:: r.zoo_every], r.T, r.colour)])
        crop_labels += list(zl[:: r.zoo_every])
    mean, proj = fit_map(fit_x, crop_labels, r)
    gen = np.array([it.kind == "generated" for it in items])
    floors = image_noise_floors(all_crops, counts) if r.head_noise else None
    det = detection_fit_set(items, feats, counts, train, r, cache, progress, floors)
    proj, det_emb, head = fit_detection_stage(*det[:4], mean, proj, r, det.noise, det.column_fit(r))
    emb = det_emb[: len(items)]
    real_tr = train & ~gen
    proto = emb[real_tr].mean(0)
    proto = proto / np.linalg.norm(proto)
    # fields added after the first model are left out at their old values, so --no-colour --fpr-confidence 0
    # --det-column 0.5 gives the first model's id again
    recipe = {k: v for k, v in asdict(r).items() if LEGACY.get(k, object()) != v}
    rh = hashlib.sha256(json.dumps([recipe, sorted(it.relpath for it in items if it.split == "train")]).encode())
    rh = rh.hexdigest()
    mid = model_id or f"lida-spam{'c' if r.colour else ''}-t{r.T}-wcw{proj.shape[1]}-{rh[:10]}"
    colour = "-colour" if r.colour else ""
    base = dict(
        model_id=mid, architecture=f"spam-t{r.T}{colour}-wcw", fingerprint_mode="rgb", crop_size=r.crop,
        crop_count=r.crop_count, crop_align=r.align, min_image_size=r.crop,
        normalization={"features": f"SPAM T={r.T}" + (" R,G,B,R-G,B-G" if r.colour else ""), "map": "fitted"},
        embedding_dim=proj.shape[1], real_prototype=tuple(float(v) for v in proto), detection_temperature=0.1,
        detection_fpr=r.fpr, recipe_hash=rh, input_bits=8, detection_head=head, detection_confidence=r.fpr_confidence,
        counts_input=counts_metadata(r),
    )  # fmt: skip
    probe = ModelInfo(detection_threshold=0.5, open_set_threshold=0.5, **base)
    real_ho = ~train & ~gen
    if not real_ho.any():
        raise ValueError("calibration needs held-out real images")
    cal = ai_scores(emb[real_ho], probe, None if floors is None else floors[real_ho])[0]
    if r.head_noise:  # and noised versions of them: light noise does not make a photo generated
        plan = calibration_plan(np.flatnonzero(real_ho))
        cf, cc, cn = processed_copies(items, plan, r, cache, progress, tag="calibration")
        cal = np.concatenate([cal, ai_scores(image_embeddings(apply_map(cf, mean, proj), cc), probe, cn)[0]])
    det_t = calibrate_threshold(cal, r.fpr, r.fpr_confidence)
    open_labels = [i for i, it in enumerate(items) if train[i] and gen[i] and not it.label.startswith("ldm-sr")]
    open_t, open_stats = open_set_threshold(
        emb[open_labels], [items[i].label for i in open_labels], r.open_unknown_accept, r.fpr_confidence
    )
    fam_m, fam_stats = None, {}
    if r.family_wrong:
        fam_m, fam_stats = family_margin(
            emb[open_labels], [items[i].label for i in open_labels], [items[i].family for i in open_labels],
            r.family_wrong, r.fpr_confidence,
        )  # fmt: skip
    sc_tr = ai_scores(emb[train], probe, None if floors is None else floors[train])[0]
    from lida_plugin.evaluate.metrics import roc_auc

    training = {
        "recipe": asdict(r),
        "features": (
            "SPAM of R, G, B, R-G, B-G (lida_plugin.residual.colour_spam_features)"
            if r.colour
            else "SPAM (lida_plugin.residual.spam_features)"
        )
        + " per crop of the serving grid",
        "map": f"z-score, PCA {r.pca_dim}, within-class whitening eps {r.eps}, {r.dim} leading axes"
        f" + a detection column (weight {r.det_column}); train split"
        + (f" + every {r.zoo_every}th crop of the generator zoo" if r.zoo_every else ""),
        "map_classes": sorted(set(crop_labels)),
        "detection_fit": "train split"
        + (f" + {r.det_resize_copies} resized copies of every train image (resize_plan)" if r.det_resize_copies else "")
        + (
            f" + {r.det_camera_copies} camera-processed copies of every train image (camera_plan)"
            if r.det_camera_copies
            else ""
        )
        + (f" + {r.det_jpeg_copies} JPEG round trips of every train image (jpeg_plan)" if r.det_jpeg_copies else "")
        + (
            f" + {r.det_sharpen_copies} sharpened copies of every train"
            f" {'generated ' if r.sharpen_generated_only else ''}image (sharpen_plan)"
            if r.det_sharpen_copies
            else ""
        )
        + (
            f" + {r.det_noise_copies} noised copies (sd {r.noise_sd[0]}-{r.noise_sd[1]}) of every train"
            f" {'' if r.noise_generated else 'real '}image (noise_plan)"
            + ("" if r.column_noise else ", in the head's fit only (not the detection column's)")
            if r.det_noise_copies
            else ""
        )
        + (f" + {r.det_rzoo} random decoders' images as generated (rzoo)" if r.det_rzoo else ""),
        "detection_head": "logistic regression on the image embedding"
        + (
            f" and its noise floor (hinges at {list(NOISE_KNOTS)}, cap {NOISE_CAP}, and the embedding times it)"
            if r.head_noise
            else ""
        )
        + f", L2 {r.head_l2}, train split, train AUC {roc_auc(sc_tr, gen[train]):.4f}",
        "detection_calibration": f"{int(real_ho.sum())} held-out real images"
        + (
            f" and {len(CALIBRATION_NOISE)} noised versions of each (CALIBRATION_NOISE: {list(CALIBRATION_NOISE)})"
            if r.head_noise
            else ""
        )
        + f", fpr {r.fpr}"
        + (f" at confidence {r.fpr_confidence} (Clopper-Pearson upper bound)" if r.fpr_confidence else ""),
        "open_set": {**open_stats, "classes": sorted({items[i].label for i in open_labels})},
        **({"family_margin": fam_stats} if r.family_wrong else {}),
        "split": "sha256 rank per class, first ceil(n/2) train (exporters/data.py)",
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }
    info = ModelInfo(
        detection_threshold=det_t, open_set_threshold=open_t, family_margin=fam_m, training=training, **base
    )
    model = build_graph(mean, proj, r, info.to_metadata())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    parse_metadata({p.key: p.value for p in onnx.load(str(out)).metadata_props}, str(out))
    # parity: the graph against the numpy reference + map, on held-out crops
    sess = ort.InferenceSession(str(out), sess_options=_ort_threads(), providers=["CPUExecutionProvider"])
    bounds = np.cumsum([0, *counts])
    ho = [i for i in range(len(items)) if not train[i]][:: max(1, int((~train).sum()) // 24)]
    crops = np.concatenate([all_crops[bounds[i] : bounds[i + 1]] for i in ho])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: crops})[0]
    fed = sess.run([OUTPUT_NAME], {INPUT_NAME: crops[:0], COUNTS_NAME: CropCounter(r.T, r.colour).counts(crops)})[0]
    ref = apply_map(crop_features(crops, r.T, r.colour), mean, proj)
    diff = max(float(np.abs(got - ref).max()), float(np.abs(fed - ref).max()))
    if diff > PARITY_TOL:
        raise RuntimeError(f"parity check failed: ONNX vs numpy max abs diff {diff:.2e} > {PARITY_TOL}")
    stats = {"parity_max_abs_diff": diff, "detection_threshold": det_t, "open_set": open_stats,
             "size_bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return out, info, stats
