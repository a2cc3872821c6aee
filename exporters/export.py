"""ONNX export to the model contract, with calibrated thresholds and a parity check.

* Graph: ``Encoder`` (fingerprint layer inside) exported with opset 18, dynamic batch.
* ``real_prototype``: the adapted prototype ``p_r`` (for a model that was never adapted, the
  normalised mean embedding of the train-split real images).
* ``detection_threshold``: calibrated on the **held-out real** images so that at most
  ``fpr`` (default 5%) of them score ``ai_score >= threshold``.
* ``open_set_threshold``: chosen on the **train split** generated images by leave-one-out:
  for each image, ``known`` = its highest cosine to another image of its own class, ``unknown``
  = its highest cosine to any image of another class (as if its own generator were not
  registered); the threshold maximises the balanced accuracy of ``known >= t`` vs ``unknown < t``.
* Parity: ONNX Runtime vs torch on real crops, max abs difference (must be <= 1e-4).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lida_plugin.contract import INPUT_NAME, OUTPUT_NAME, ModelInfo, ai_score, parse_metadata
from lida_plugin.detect import calibrate_threshold as detection_threshold

from . import data as D
from .models import NORMALIZATION
from .train import Recipe, embed_images, load_encoder, recipe_hash

PARITY_TOL = 1e-4


def export_onnx(model: torch.nn.Module, path: str | Path, crop: int, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` as ONNX (opset 18, dynamic batch) with ``metadata`` as metadata_props."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.randint(0, 256, (2, 3, crop, crop), dtype=torch.uint8)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the verified path
        torch.onnx.export(
            model, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=18,
            dynamo=False, dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
        )  # fmt: skip
    m = onnx.load(str(tmp))
    del m.metadata_props[:]
    for k, v in (metadata or {}).items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(path))
    tmp.unlink(missing_ok=True)
    return path


def parity(model: torch.nn.Module, onnx_path: str | Path, crops: np.ndarray) -> float:
    """Max abs difference between torch and ONNX Runtime (CPU) embeddings of ``crops``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(crops)).numpy()
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: crops})[0]
    return float(np.abs(ref - got).max())


def open_set_threshold(
    emb: np.ndarray, labels: list[str], max_unknown_accept: float = 0.0, confidence: float = 0.0
) -> tuple[float, dict]:
    """Leave-one-out threshold on cosine similarity (see the module docstring). With
    ``max_unknown_accept`` the rule is not the best balanced accuracy but a stated rate: the leave-one-out
    best matches of *other* generators are calibrated like real photos for detection
    (:func:`lida_plugin.detect.calibrate_threshold` with ``confidence``), so an unregistered
    generator gets a confident name at most that often."""
    y = np.asarray(labels)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    known, unknown = [], []
    for i in range(len(y)):
        same = y == y[i]
        same[i] = False
        if same.any():
            known.append(sim[i, same].max())
        unknown.append(sim[i, y != y[i]].max())
    known, unknown = np.asarray(known), np.asarray(unknown)
    if not len(known) or not len(unknown):  # no class with two images, or one class: nothing to calibrate on
        return -1.0, {"balanced_accuracy": None, "known_accept": None, "unknown_reject": None, "uncalibrated": True}
    if max_unknown_accept:
        from lida_plugin.detect import calibrate_threshold

        best_t = calibrate_threshold(unknown, max_unknown_accept, confidence)
        best = 0.5 * ((known >= best_t).mean() + (unknown < best_t).mean())
    else:
        cands = np.unique(np.concatenate([known, unknown]))
        best_t, best = 0.0, -1.0
        for t in cands:
            bacc = 0.5 * ((known >= t).mean() + (unknown < t).mean())
            if bacc > best:
                best, best_t = bacc, float(t)
    stats = {
        "balanced_accuracy": round(float(best), 4),
        "known_accept": round(float((known >= best_t).mean()), 4),
        "unknown_reject": round(float((unknown < best_t).mean()), 4),
    }
    return float(np.clip(best_t, -1.0, 1.0)), stats


def family_margin(
    emb: np.ndarray, labels: list[str], families: list[str | None], max_wrong: float = 0.05, confidence: float = 0.9
) -> tuple[float | None, dict]:
    """The ``lida.family_margin`` (:func:`lida_plugin.attribute.verdict`): leave-one-*family*-out on
    ``emb`` (image embeddings, unit rows, with their generator ``labels`` and ``families``). For each
    image, with every image of its own family removed, the margin by which the nearest remaining family
    beats the next is what an image of an unregistered family would show; the margin is calibrated
    on those like real photos for detection (:func:`lida_plugin.detect.calibrate_threshold`), so such
    an image gets a (wrong) family named alone at most ``max_wrong`` of the time with ``confidence``.
    Stats: the same rule on the leave-one-*image*-out ranking (its own family registered), the share
    named right and wrong. ``(None, stats)`` when fewer than three families have images."""
    from lida_plugin.detect import calibrate_threshold

    fam = np.array([f if f is not None else f"<none:{g}>" for f, g in zip(families, labels, strict=True)])
    names = sorted(set(fam))
    if len(names) < 3:
        return None, {"uncalibrated": True, "families": len(names)}
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    # best similarity of each image to each family: [N, F]
    best = np.stack([np.where(fam == f, sim, -np.inf).max(axis=1) for f in names], axis=1)
    own = np.array([names.index(f) for f in fam])

    def top2(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-b, axis=1)
        rows = np.arange(len(b))
        return order[:, 0], b[rows, order[:, 0]] - b[rows, order[:, 1]]

    away = best.copy()
    away[np.arange(len(own)), own] = -np.inf  # its own family not registered
    _, neg = top2(away)
    neg = neg[np.isfinite(neg)]
    m = calibrate_threshold(neg, max_wrong, confidence)
    top, margin = top2(best)  # its own family registered (the image itself left out)
    ok = np.isfinite(margin) & (margin >= m)
    stats = {
        "max_wrong": max_wrong,
        "confidence": confidence,
        "families": len(names),
        "images": int(len(fam)),
        "unregistered_family_named": round(float((neg >= m).mean()), 4),
        "registered_family_named_right": round(float((ok & (top == own)).mean()), 4),
        "registered_family_named_wrong": round(float((ok & (top != own)).mean()), 4),
    }
    return float(np.clip(m, 0.0, 2.0)), stats


def export_checkpoint(
    ckpt: str | Path,
    items: list[D.Item],
    out: str | Path,
    fpr: float = 0.05,
    model_id: str | None = None,
    extra_training: dict | None = None,
    open_set_labels: set[str] | None = None,
) -> tuple[Path, ModelInfo, dict]:
    """Export an ``adapt.pt``/``pretrain.pt`` checkpoint with calibrated metadata.

    ``open_set_labels``: the generated classes the open-set threshold is chosen on (default:
    every class except the ``ldm-sr-*`` research checkpoints, i.e. the default store's classes).
    """
    model, recipe, st = load_encoder(ckpt)
    model.eval()
    rc = recipe
    real_ho = [it for it in items if it.kind == "real" and it.split == "heldout"]
    real_tr = [it for it in items if it.kind == "real" and it.split == "train"]
    gen_tr = [
        it
        for it in items
        if it.kind == "generated"
        and it.split == "train"
        and (it.label in open_set_labels if open_set_labels is not None else not it.label.startswith("ldm-sr"))
    ]
    if len({it.label for it in gen_tr}) < 2:  # too few classes to calibrate on: use them all
        gen_tr = [it for it in items if it.kind == "generated" and it.split == "train"]
    if not real_ho:
        raise D.DataError("calibration needs held-out real images")
    if "prototype" in st:
        proto = F.normalize(st["prototype"].float(), dim=0).numpy()
    else:
        e = embed_images(model, [it.pixels for it in real_tr], rc.crop, rc.crop_count, rc.align, resize=rc.resize)
        proto = e.mean(0)
        proto = proto / np.linalg.norm(proto)
    e_ho = embed_images(model, [it.pixels for it in real_ho], rc.crop, rc.crop_count, rc.align, resize=rc.resize)
    det_t = detection_threshold(ai_score(e_ho @ proto, rc.tau), fpr)
    e_gen = embed_images(model, [it.pixels for it in gen_tr], rc.crop, rc.crop_count, rc.align, resize=rc.resize)
    open_t, open_stats = open_set_threshold(e_gen, [it.label for it in gen_tr])
    rh = recipe_hash(recipe, [it.relpath for it in items if it.split == "train"])
    short = {"lida-resnet-small": "rns", "lida-resnet-tiny": "rnt"}.get(rc.arch, rc.arch)
    mid = model_id or f"lida-{short}-{rc.mode}-s{rc.crop}-{rh[:10]}"
    training = {
        "recipe": json.loads(rc.to_json()),
        "pretrain_seconds": None,
        "adapt_seconds": round(float(st.get("seconds", 0.0)), 1),
        "adapt_classes": st.get("classes"),
        "open_set": {**open_stats, "classes": sorted({it.label for it in gen_tr})},
        "detection_calibration": f"{len(real_ho)} held-out real images, fpr {fpr}",
        "split": "sha256 rank per class, first ceil(n/2) train (exporters/data.py)",
    }
    training.update(extra_training or {})
    info = ModelInfo(
        model_id=mid, architecture=rc.arch, fingerprint_mode=rc.mode, crop_size=rc.crop,
        crop_count=rc.crop_count, crop_align=rc.align, min_image_size=rc.crop,
        normalization=NORMALIZATION[rc.mode], embedding_dim=rc.dim,
        real_prototype=tuple(float(v) for v in proto), detection_temperature=rc.tau,
        detection_threshold=det_t, detection_fpr=fpr, open_set_threshold=open_t, recipe_hash=rh,
        training=training, input_resize=rc.resize,
    )  # fmt: skip
    path = export_onnx(model, out, rc.crop, info.to_metadata())
    crops = np.concatenate([D.eval_crops(D.resize(it.pixels, rc.resize), rc.crop, 4, rc.align) for it in real_ho[:16]])
    diff = parity(model, path, crops)
    if diff > PARITY_TOL:
        raise RuntimeError(f"parity check failed: torch vs onnxruntime max abs diff {diff:.2e} > {PARITY_TOL}")
    import onnx

    parse_metadata({p.key: p.value for p in onnx.load(str(path)).metadata_props}, str(path))
    return path, info, {"parity_max_abs_diff": diff, "open_set": open_stats, "detection_threshold": det_t}


def export_untrained(recipe: Recipe, out: str | Path, fpr: float = 0.05) -> Path:
    """An uncalibrated model (random weights) to the contract: for tests and smoke checks."""
    from .models import build

    model = build(recipe.arch, recipe.mode, recipe.dim)
    proto = np.zeros(recipe.dim)
    proto[0] = 1.0
    info = ModelInfo(
        model_id="lida-untrained", architecture=recipe.arch, fingerprint_mode=recipe.mode, crop_size=recipe.crop,
        crop_count=recipe.crop_count, crop_align=recipe.align, min_image_size=recipe.crop,
        normalization=NORMALIZATION[recipe.mode], embedding_dim=recipe.dim, real_prototype=tuple(proto),
        detection_temperature=recipe.tau, detection_threshold=0.5, detection_fpr=fpr, open_set_threshold=0.5,
    )  # fmt: skip
    return export_onnx(model, out, recipe.crop, info.to_metadata())
