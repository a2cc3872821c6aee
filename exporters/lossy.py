"""``lida-train lossy``: fit, measure and calibrate the lossy-input detector (:mod:`lida_plugin.lossy`).

Recipe (every choice seeded; the same data and recipe give the same file):

* Data: the corpus under ``--data`` (``../shared/data``), split as everywhere else
  (:func:`lida_plugin.dataset.assign_split`): the *train* half is fitted on, the *held-out* half
  measures AUC and calibrates the threshold.
* Training copies: each train-half image (both classes) is re-encoded ``copies`` times in
  memory: with probability ``p_resize`` first resized by one of ``resize_factors`` (bicubic,
  bilinear or Lanczos), then saved as JPEG at a quality drawn uniformly from
  ``[q_min, q_max]`` with 4:2:0 or 4:4:4 chroma (a resized copy stays PNG with probability
  ``p_resize_png``); every copy is decoded by the runtime's decoder.
* Model: features (:func:`lida_plugin.lossy.features`) -> z-score (train mean and scale) ->
  L2-regularised logistic regression (L-BFGS, float64). Generated images are weighted so each
  family carries the same total weight (``family_balanced``; otherwise per image), and the two
  classes carry equal weight.
* Threshold: :func:`lida_plugin.detect.calibrate_threshold` at ``fpr`` on held-out real photos
  (their own random copies from the training distribution; ``threshold_from="heldout"``) or on
  cross-fitted scores, each real set's copies scored by a detector fitted without that set
  (``"real-set-out"``: the rate a photo of a kind the detector never saw meets; :meth:`Experiment.threshold`).
* Measurements per band (:data:`lida_plugin.lossy.BANDS`): AUC on the held-out half (all
  generators; and without the ldm-sr face classes, ``heldout_named``), the cross-calibrated
  FPR/TPR (:func:`lida_plugin.evaluate.metrics.cross_calibrated`), the FPR/TPR at the shipped
  threshold, and **leave-family-out**: for every generator family, a detector trained without
  that family scores its held-out images against the held-out real photos; the mean (and the
  minimum) over families with at least ``lofo_min_images`` held-out images is the estimate for
  generators the detector never saw.
* ``calibrated`` is true only when :func:`lida_plugin.lossy.verdict_misses` finds nothing: held-out
  and leave-family-out AUC at q85 >= :data:`lida_plugin.lossy.VERDICT_AUC`, the held-out TPR at the
  threshold there >= ``VERDICT_TPR``, and the leave-real-set-out false-positive rate (each real set
  scored by a detector fitted and thresholded without it) at most ``VERDICT_UNSEEN_REAL_FPR`` x ``fpr``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lida_plugin.dataset import DataError, assign_split, scan
from lida_plugin.decode import decode_file
from lida_plugin.errors import InputError
from lida_plugin.lossy import (
    BANDS,
    FORMAT,
    VERDICT_AUC,
    VERDICT_BAND,
    VERDICT_TPR,
    VERDICT_UNSEEN_REAL_FPR,
    VERSION,
    Degradation,
    LossyDetector,
    features,
    verdict_misses,
)

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "lida_plugin" / "data" / "lossy-detector.json"
DEFAULT_CACHE = REPO / "runs" / "lossy"
METHODS = ("bicubic", "bilinear", "lanczos")


@dataclass
class LossyRecipe:
    seed: int = 0
    feature: str = "spam-yccd"
    T: int = 3
    max_side: int = 512
    copies: int = 4
    q_min: int = 60
    q_max: int = 98
    p_resize: float = 0.3
    resize_factors: list[float] = field(default_factory=lambda: [0.5, 0.75])
    p_resize_png: float = 0.5
    l2: float = 1e-2
    family_balanced: bool = True
    fpr: float = 0.05
    lofo_min_images: int = 3
    # where the threshold's FPR is measured: "heldout" (the held-out real photos' copies) or "real-set-out"
    # (cross-fitted: each real set scored by a detector that never saw it; Experiment.threshold)
    threshold_from: str = "real-set-out"

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Image:
    relpath: str
    kind: str  # "generated" | "real"
    label: str  # generator, or the real set
    family: str  # "real" for real photos
    split: str
    pixels: np.ndarray


def load_images(root: str | Path) -> list[Image]:
    """Decode every image of the corpus (reliable ones only: the copies start from the original pixels)."""
    root = Path(root)
    found = scan(root)
    by: dict[tuple[str, str], list[str]] = {}
    for kind, label, _, f in found:
        by.setdefault((kind, label), []).append(f.name)
    splits = {k: assign_split(v, *k) for k, v in by.items()}
    out, skipped = [], []
    for kind, label, family, f in found:
        try:
            dec = decode_file(f)
        except InputError as exc:
            skipped.append(f"{f}: {exc.reason}")
            continue
        if not dec.reliable or min(dec.pixels.shape[:2]) < 32:
            skipped.append(f"{f}: {'; '.join(dec.reasons) or 'too small'}")
            continue
        fam = "real" if kind == "real" else family
        out.append(Image(str(f.relative_to(root)), kind, label, fam, splits[(kind, label)][f.name], dec.pixels))
    if skipped:
        log.warning("skipped %d file(s): %s", len(skipped), "; ".join(skipped[:5]))
    if not out:
        raise DataError(f"{root}: no usable images")
    return out


def training_degradation(recipe: LossyRecipe, relpath: str, copy: int) -> Degradation:
    """The ``copy``-th random re-encoding of ``relpath`` (deterministic in the recipe's seed)."""
    h = int(hashlib.sha256(relpath.encode()).hexdigest()[:12], 16)
    rng = np.random.default_rng([recipe.seed, h, copy])
    resize = None
    method = "bicubic"
    if rng.random() < recipe.p_resize:
        resize = float(rng.choice(recipe.resize_factors))
        method = METHODS[int(rng.integers(len(METHODS)))]
    q = int(rng.integers(recipe.q_min, recipe.q_max + 1))
    ss = int(rng.choice([0, 2]))
    if resize is not None and rng.random() < recipe.p_resize_png:
        return Degradation(resize=resize, method=method)
    return Degradation(resize=resize, quality=q, subsampling=ss, method=method)


class FeatureCache:
    """Features of (image, degradation) pairs for several feature variants, cached in ``.npz`` files."""

    def __init__(self, folder: Path | None, variants: list[tuple[str, int, int]]) -> None:
        self.folder = folder
        self.variants = variants
        self.mem: dict[tuple, dict[str, np.ndarray]] = {v: {} for v in variants}
        for v in variants:
            f = self._file(v)
            if f is not None and f.is_file():
                with np.load(f) as z:
                    self.mem[v] = {k: z[k] for k in z.files}

    def _file(self, v: tuple[str, int, int]) -> Path | None:
        return None if self.folder is None else self.folder / f"{v[0]}-T{v[1]}-m{v[2]}.npz"

    @staticmethod
    def key(img: Image, deg: Degradation) -> str:
        return f"{img.relpath}|{deg.describe()}"

    def get(self, imgs: list[Image], degs: list[Degradation], variant: tuple[str, int, int], progress: bool = False):
        """``[N, D]`` features for the pairs ``zip(imgs, degs)`` (computing and caching the missing ones)."""
        missing = [(i, d) for i, d in zip(imgs, degs, strict=True) if self.key(i, d) not in self.mem[variant]]
        if missing:
            self._compute(missing, progress)
        return np.stack([self.mem[variant][self.key(i, d)] for i, d in zip(imgs, degs, strict=True)])

    def _compute(self, pairs, progress: bool) -> None:
        from tqdm import tqdm

        todo = {}
        for i, d in pairs:
            todo[self.key(i, d)] = (i, d)
        last = time.monotonic()
        for k, (img, deg) in tqdm(todo.items(), desc="lossy features", disable=not progress, mininterval=5):
            px = deg.apply(img.pixels, img.relpath).pixels
            for v in self.variants:
                if k not in self.mem[v]:
                    self.mem[v][k] = features(px, v[0], v[1], v[2])
            if time.monotonic() - last > 120:  # an interrupted run keeps what it computed
                self.save()
                last = time.monotonic()
        self.save()

    def save(self) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for v in self.variants:
            f = self._file(v)
            tmp = f.with_suffix(".tmp.npz")
            np.savez(tmp, **self.mem[v])
            tmp.replace(f)


# -- the model ---------------------------------------------------------------------------------------
def fit_logreg(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float) -> dict:
    """Weighted L2 logistic regression on z-scored ``x``; returns mean, scale, w, b (float64)."""
    import torch

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = torch.from_numpy((x - mean) / scale).double()
    t = torch.from_numpy(y.astype(np.float64))
    sw = torch.from_numpy(weights / weights.sum())
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        logits = z @ w + b
        loss = (sw * torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"mean": mean, "scale": scale, "w": w.detach().numpy().copy(), "b": float(b.item())}


def _score(p: dict, x: np.ndarray) -> np.ndarray:
    z = (x - p["mean"]) / p["scale"]
    return 1.0 / (1.0 + np.exp(-(z @ p["w"] + p["b"])))


def sample_weights(imgs: list[Image], family_balanced: bool) -> np.ndarray:
    """Real and generated carry equal total weight; within generated, each family equal (or each image)."""
    gen = [i for i in imgs if i.kind == "generated"]
    n_real = sum(i.kind == "real" for i in imgs)
    fam_n: dict[str, int] = {}
    for i in gen:
        fam_n[i.family] = fam_n.get(i.family, 0) + 1
    out = np.empty(len(imgs))
    for k, i in enumerate(imgs):
        if i.kind == "real":
            out[k] = 0.5 / n_real
        elif family_balanced:
            out[k] = 0.5 / (len(fam_n) * fam_n[i.family])
        else:
            out[k] = 0.5 / len(gen)
    return out


# -- the measurements ---------------------------------------------------------------------------------
def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    from lida_plugin.evaluate.metrics import roc_auc

    return roc_auc(scores, positive)


class Experiment:
    """Training copies, band features and fits for one feature variant."""

    def __init__(self, images: list[Image], recipe: LossyRecipe, cache: FeatureCache, progress: bool = False):
        self.images, self.r, self.cache, self.progress = images, recipe, cache, progress
        self.variant = (recipe.feature, recipe.T, recipe.max_side)
        tr = [i for i in images if i.split == "train"]
        self.train_imgs = [i for i in tr for _ in range(recipe.copies)]
        self.train_degs = [training_degradation(recipe, i.relpath, c) for i in tr for c in range(recipe.copies)]
        self.x_train = cache.get(self.train_imgs, self.train_degs, self.variant, progress).astype(np.float64)
        self.y_train = np.asarray([i.kind == "generated" for i in self.train_imgs])
        self.fam_train = np.asarray([i.family for i in self.train_imgs])
        # calibration: held-out real photos, copies from the training distribution
        self.cal_imgs = [i for i in images if i.split == "heldout" and i.kind == "real" for _ in range(recipe.copies)]
        n = recipe.copies
        self.cal_degs = [training_degradation(recipe, i.relpath, 1000 + k % n) for k, i in enumerate(self.cal_imgs)]
        self.x_cal = cache.get(self.cal_imgs, self.cal_degs, self.variant, progress).astype(np.float64)
        self.cal_label = np.asarray([i.label for i in self.cal_imgs])
        self.lab_train = np.asarray([i.label if i.kind == "real" else "" for i in self.train_imgs])

    def fit(self, exclude_family: str | None = None) -> dict:
        keep = np.ones(len(self.train_imgs), dtype=bool)
        if exclude_family is not None:
            keep = self.fam_train != exclude_family
        imgs = [i for i, k in zip(self.train_imgs, keep, strict=True) if k]
        w = sample_weights(imgs, self.r.family_balanced)
        return fit_logreg(self.x_train[keep], self.y_train[keep].astype(np.float64), w, self.r.l2)

    def band_features(self, imgs: list[Image], band: str) -> tuple[np.ndarray, list[Image]]:
        degs = BANDS[band]
        pairs_i = [i for d in degs for i in imgs]
        pairs_d = [d for d in degs for _ in imgs]
        return self.cache.get(pairs_i, pairs_d, self.variant, self.progress).astype(np.float64), pairs_i

    def measure(self, p: dict, threshold: float) -> dict:
        from lida_plugin.evaluate.metrics import cross_calibrated, threshold_metrics

        held = [i for i in self.images if i.split == "heldout"]
        out: dict = {}
        all_s, all_y = [], []
        for band in BANDS:
            x, imgs = self.band_features(held, band)
            s = _score(p, x)
            y = np.asarray([i.kind == "generated" for i in imgs])
            named = np.asarray([not i.label.startswith("ldm-sr") for i in imgs])
            at = threshold_metrics(s, y, threshold)
            out[band] = {
                "heldout": _auc(s, y),
                "heldout_named": _auc(s[named], y[named]),
                "fpr_at_threshold": at["fpr"],
                "tpr_at_threshold": at["tpr"],
                "cross_calibrated": cross_calibrated(s, y, self.r.fpr),
                "n_generated": int(y.sum()),
                "n_real": int((~y).sum()),
            }
            all_s.append(s)
            all_y.append(y)
        s, y = np.concatenate(all_s), np.concatenate(all_y)
        out["all"] = {"heldout": _auc(s, y)}
        return out

    def leave_family_out(self) -> dict:
        """Per band: AUC of each family's held-out images against the held-out real photos, scored by a
        detector trained without that family."""
        fams: dict[str, int] = {}
        for i in self.images:
            if i.kind == "generated" and i.split == "heldout":
                fams[i.family] = fams.get(i.family, 0) + 1
        real = [i for i in self.images if i.kind == "real" and i.split == "heldout"]
        per: dict[str, dict[str, float]] = {b: {} for b in BANDS}
        for fam in sorted(fams):
            if fams[fam] < self.r.lofo_min_images:
                continue
            t0 = time.perf_counter()
            p = self.fit(exclude_family=fam)
            gen = [i for i in self.images if i.family == fam and i.split == "heldout"]
            for band in BANDS:
                xg, _ = self.band_features(gen, band)
                xr, _ = self.band_features(real, band)
                s = np.concatenate([_score(p, xg), _score(p, xr)])
                y = np.concatenate([np.ones(len(xg), bool), np.zeros(len(xr), bool)])
                per[band][fam] = _auc(s, y)
            log.info("leave-family-out %s (%d held-out images): q85 AUC %.3f (%.1fs)", fam, fams[fam], per["q85"][fam],
                     time.perf_counter() - t0)  # fmt: skip
        out = {}
        for band, d in per.items():
            v = np.asarray(list(d.values()))
            out[band] = {"mean": float(v.mean()), "min": float(v.min()), "per_family": d}
        out["families"] = {f: n for f, n in sorted(fams.items()) if n >= self.r.lofo_min_images}
        return out

    # -- real photos of a kind the detector never saw -----------------------------------------------------
    @property
    def real_sets(self) -> list[str]:
        return sorted({i.label for i in self.images if i.kind == "real"})

    def fit_without(self, real_sets: set[str]) -> dict:
        """A detector fitted without the training copies of ``real_sets``' photos."""
        keep = ~np.isin(self.lab_train, sorted(real_sets))
        imgs = [i for i, k in zip(self.train_imgs, keep, strict=True) if k]
        w = sample_weights(imgs, self.r.family_balanced)
        return fit_logreg(self.x_train[keep], self.y_train[keep].astype(np.float64), w, self.r.l2)

    def unseen_real_scores(self, sets: list[str], also_out: frozenset = frozenset()) -> np.ndarray:
        """Cross-fitted real scores: every set of ``sets`` (its training and calibration copies) scored by a
        detector fitted without it (and without ``also_out``)."""
        out = []
        for name in sets:
            p = self.fit_without({name} | also_out)
            out += [_score(p, self.x_train[self.lab_train == name]), _score(p, self.x_cal[self.cal_label == name])]
        return np.concatenate(out)

    def threshold_rule(self, exclude: frozenset = frozenset()) -> str:
        """The recipe's ``threshold_from``, or ``heldout`` where fewer than two real sets are left (a fit
        without the only one would have no real photo in it)."""
        left = [s for s in self.real_sets if s not in exclude]
        return self.r.threshold_from if len(left) >= 2 else "heldout"

    def threshold(self, p: dict, exclude: frozenset = frozenset()) -> float:
        """The threshold at the recipe's FPR for detector ``p`` (fitted without the real sets ``exclude``):
        on the held-out calibration copies (``threshold_from`` ``heldout``), or on cross-fitted scores of
        each real set by a detector that never saw it (``real-set-out``: the rate a photo of an unseen kind
        meets)."""
        from lida_plugin.detect import calibrate_threshold

        if self.threshold_rule(exclude) == "real-set-out":
            sets = [s for s in self.real_sets if s not in exclude]
            return calibrate_threshold(self.unseen_real_scores(sets, exclude), self.r.fpr)
        return calibrate_threshold(_score(p, self.x_cal[~np.isin(self.cal_label, sorted(exclude))]), self.r.fpr)

    def leave_real_set_out(self, band: str = "q85") -> dict | None:
        """The false-positive rate on photos of a kind the detector never saw: for every real set, a detector
        fitted without it, its threshold set by the recipe's rule without it (:meth:`threshold`), scores all of
        that set's images (both halves) at ``band``; the pooled rate, the worst set, the held-out generated
        images caught at those thresholds and each set's AUC against them."""
        sets = self.real_sets
        if len(sets) < 2:
            return None  # nothing to calibrate on without the one set
        per: dict[str, dict] = {}
        xg, _ = self.band_features([i for i in self.images if i.kind == "generated" and i.split == "heldout"], band)
        for name in sets:
            p = self.fit_without({name})
            t = self.threshold(p, frozenset({name}))
            x, _ = self.band_features([i for i in self.images if i.kind == "real" and i.label == name], band)
            s, sg = _score(p, x), _score(p, xg)
            auc = _auc(np.concatenate([sg, s]), np.concatenate([np.ones(len(sg), bool), np.zeros(len(s), bool)]))
            per[name] = {"fpr": float((s >= t).mean()), "n": int(len(s)), "auc": auc, "tpr": float((sg >= t).mean())}
            log.info("leave-real-set-out %s: FPR %.3f at %s over %d scores", name, per[name]["fpr"], band, len(s))
        n = sum(v["n"] for v in per.values())
        return {
            "band": band,
            "pooled_fpr": sum(v["fpr"] * v["n"] for v in per.values()) / n,
            "mean_auc": float(np.mean([v["auc"] for v in per.values()])),  # vs the held-out generated images
            "mean_tpr": float(np.mean([v["tpr"] for v in per.values()])),
            "max_fpr": max(v["fpr"] for v in per.values()),
            "per_set": per,
        }


def train(
    recipe: LossyRecipe,
    data: str | Path,
    cache_dir: Path | None = DEFAULT_CACHE,
    lofo: bool = True,
    progress: bool = False,
    images: list[Image] | None = None,
) -> dict:
    """Fit, calibrate and measure; return the parameter file's content (:func:`write_detector` writes it)."""
    t0 = time.perf_counter()
    images = images if images is not None else load_images(data)
    cache = FeatureCache(cache_dir, [(recipe.feature, recipe.T, recipe.max_side)])
    ex = Experiment(images, recipe, cache, progress)
    p = ex.fit()
    threshold = ex.threshold(p)
    auc = ex.measure(p, threshold)
    lo = ex.leave_family_out() if lofo else None
    lro = ex.leave_real_set_out() if lofo else None
    for band in BANDS:
        auc[band]["leave_family_out"] = lo[band]["mean"] if lo else None
        auc[band]["leave_family_out_min"] = lo[band]["min"] if lo else None
    d_rule = {"auc": auc, "fpr": recipe.fpr, "leave_real_set_out": lro}
    missed = verdict_misses(_finite(d_rule)) if lo is not None else ["leave-family-out not measured"]
    calibrated = not missed
    counts = {
        "train_images": len({i.relpath for i in ex.train_imgs}),
        "train_copies": len(ex.train_imgs),
        "heldout_images": sum(i.split == "heldout" for i in images),
        "calibration_scores": len(ex.cal_imgs),
    }
    d = {
        "format": FORMAT,
        "version": VERSION,
        "feature": recipe.feature,
        "T": recipe.T,
        "max_side": recipe.max_side,
        "dim": int(len(p["w"])),
        "parameters": {
            "mean": [float(f"{v:.8g}") for v in p["mean"]],
            "scale": [float(f"{v:.8g}") for v in p["scale"]],
            "w": [float(f"{v:.8g}") for v in p["w"]],
            "b": float(f"{p['b']:.10g}"),
        },
        "threshold": threshold,
        "threshold_from": ex.threshold_rule(),
        "fpr": recipe.fpr,
        "calibrated": calibrated,
        "verdict_rule": f"calibrated only if held-out and leave-family-out AUC at {VERDICT_BAND} are both >= "
        f"{VERDICT_AUC}, the held-out TPR at the threshold there >= {VERDICT_TPR}, and photos of an unseen real set "
        f"are flagged at most {VERDICT_UNSEEN_REAL_FPR:g} x fpr (lida_plugin.lossy.verdict_misses)",
        "verdict_misses": missed,
        "auc": auc,
        "leave_family_out": lo,
        "leave_real_set_out": lro,
        "recipe": dataclasses.asdict(recipe),
        "recipe_hash": recipe.hash(),
        "data": {"root": _shown(data), "corpus_sha256": corpus_hash(images), **counts},
        "command": None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    d = _finite(d)
    LossyDetector.from_dict(json.loads(json.dumps(d)), "<new lossy detector>")  # it must load as written
    return d


def write_detector(d: dict, out: str | Path = DEFAULT_OUT) -> Path:
    """Validate ``d`` (schema, lengths, the calibrated rule) and write it atomically to ``out``."""
    LossyDetector.from_dict(json.loads(json.dumps(d)), str(out))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def _finite(o):
    """JSON-safe: NaN/inf become null (an AUC over a band with one class only)."""
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def all_jobs(images: list[Image], recipe: LossyRecipe) -> tuple[list[Image], list[Degradation]]:
    """Every (image, degradation) pair a training run reads: training and calibration copies, and the bands."""
    imgs: list[Image] = []
    degs: list[Degradation] = []
    for i in images:
        if i.split == "train":
            for c in range(recipe.copies):
                imgs.append(i)
                degs.append(training_degradation(recipe, i.relpath, c))
        if i.split == "heldout":
            for band in BANDS.values():
                for d in band:
                    imgs.append(i)
                    degs.append(d)
    cal = [i for i in images if i.split == "heldout" and i.kind == "real" for _ in range(recipe.copies)]
    for k, i in enumerate(cal):
        imgs.append(i)
        degs.append(training_degradation(recipe, i.relpath, 1000 + k % recipe.copies))
    return imgs, degs


def probe(
    images: list[Image],
    base: LossyRecipe,
    variants: list[tuple[str, int, bool]],
    cache_dir: Path | None,
    progress: bool = False,
) -> list[dict]:
    """Held-out and leave-family-out AUC per band for each (feature, max_side, family_balanced); nothing written."""
    uniq = sorted({(f, base.T, m) for f, m, _ in variants})
    cache = FeatureCache(cache_dir, uniq)
    imgs, degs = all_jobs(images, base)
    for v in uniq:
        cache.get(imgs, degs, v, progress)  # one decode per pair fills every variant
    rows = []
    for feature, max_side, balanced in variants:
        r = dataclasses.replace(base, feature=feature, max_side=max_side, family_balanced=balanced)
        d = train(r, "", cache_dir=cache_dir, progress=progress, images=images)
        rows.append(
            {
                "feature": feature,
                "max_side": max_side,
                "family_balanced": balanced,
                "auc": d["auc"],
                "leave_family_out": d["leave_family_out"],
                "leave_real_set_out": d["leave_real_set_out"],
                "calibrated": d["calibrated"],
            }
        )
    return rows


def _shown(data: str | Path) -> str:
    """The data root as the docs write it: relative to the repository when it is next to it."""
    p = Path(data).resolve()
    try:
        return str(Path("..") / p.relative_to(REPO.parent))
    except ValueError:
        return str(data)


def corpus_hash(images: list[Image]) -> str:
    h = hashlib.sha256()
    for i in sorted(images, key=lambda i: i.relpath):
        h.update(f"{i.relpath}|{i.split}|{i.family}|".encode())
        h.update(hashlib.sha256(i.pixels.tobytes()).digest())
    return h.hexdigest()[:16]
