"""Pre-training and few-shot adaptation loops (seeded, resumable, with progress bars).

Stage 2, :func:`pretrain` -- a classification proxy task on fingerprints, with a cosine-softmax
head on the embedding (so the proxy shapes the very space retrieval uses). Proxy data
(``Recipe.pretrain``):

* ``real``: train-split real photos, label = source-image identity (every photo its own class;
  crops of one photo share that photo's sensor/processing noise, the only thing its low bits
  can tell apart);
* ``zoo`` (default): train-split real photos pushed through the generator zoo (:mod:`exporters.zoo`),
  label = pipeline, plus the untouched photos as one ``real`` class;
* ``zoo+real``: zoo pipelines as classes plus the photos by identity;
* ``none``: no pre-training (adaptation starts from random weights).

Stage 3, :func:`adapt` -- registration (gallery) images of the generated classes plus
train-split real images; loss ``L_A + lambda * L_D`` with the paper's center loss
(``Recipe.adapt_loss = "center"``) or cosine-softmax cross-entropy + ``lambda * L_D`` (``"ce"``:
the paper's ablation, and the shipped default because it measured better here; see
``docs/training.md``).

Checkpoints: ``<run>/pretrain.pt`` and ``<run>/adapt.pt`` are written every
``ckpt_every`` steps and at the end; a run restarted with the same directory resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data as D
from .losses import LAMBDA, CenterLoss, CosineClassifier, detection_loss, lida_loss
from .models import build

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Recipe:
    """Every setting of a training run; its hash (with the data list) is the recipe hash."""

    arch: str = "lida-resnet-tiny"
    mode: str = "scaled"
    dim: int = 128
    crop: int = 64
    crop_count: int = 16
    align: int = 8
    flip: bool = True
    seed: int = 0
    pretrain: str = "zoo"
    pretrain_steps: int = 3000
    pretrain_batch: int = 32
    pretrain_lr: float = 2e-3
    zoo_pipelines: list[str] = field(default_factory=list)  # empty: every available pipeline
    adapt_loss: str = "ce"
    adapt_steps: int = 300
    adapt_batch: int = 32
    adapt_lr: float = 1e-4
    adapt_real_fraction: float = 0.25
    freeze_bn: bool = False  # adaptation keeps the pre-trained BatchNorm statistics
    tau: float = 0.1
    lam: float = LAMBDA
    center_alpha: float = 0.5
    shots: int = 0  # registration images per generated class; 0 = the whole train split
    labels: list[str] = field(default_factory=list)  # generated classes to adapt on; empty = all
    resize: int = 0  # 0: native grid; R: every image resized to R x R first (the authors' configuration)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        if not d["resize"]:
            del d["resize"]  # recipes from before the field existed keep their hash
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def recipe_hash(recipe: Recipe, relpaths: list[str]) -> str:
    h = hashlib.sha256(recipe.to_json().encode())
    for p in sorted(relpaths):
        h.update(p.encode() + b"\n")
    return h.hexdigest()


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _cosine_lr(step: int, total: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=2.0)


# ----------------------------------------------------------------------------- pre-training


def pretrain_groups(recipe: Recipe, items: list[D.Item], cache_dir: Path, gen_dir: Path | None = None):
    """``(class_names, groups)`` for the proxy task from the train-split real photos ``items``."""
    from . import zoo as Z

    reals = [it for it in items if it.kind == "real" and it.split == "train"]
    if not reals:
        raise D.DataError("pre-training needs train-split real photos (<root>/real/<set>/*.png)")
    names: list[str] = []
    groups: list[list[np.ndarray]] = []
    if recipe.pretrain in ("zoo", "zoo+real"):
        gdir = Path(gen_dir) if gen_dir else Z.DEFAULT_GENERATORS
        pipes = recipe.zoo_pipelines or Z.available(gdir)
        made = Z.cached_zoo([r.pixels for r in reals], [r.relpath for r in reals], pipes, cache_dir, gdir)
        for p in pipes:
            imgs = [im for im in made[p] if min(im.shape[:2]) >= recipe.crop]
            names.append(f"zoo:{p}")
            groups.append(imgs)
    if recipe.pretrain == "zoo":
        names.append("real")
        groups.append([r.pixels for r in reals])
    if recipe.pretrain in ("real", "zoo+real"):
        for r in reals:
            names.append(f"photo:{r.relpath}")
            groups.append([r.pixels])
    if not names:
        raise ValueError(f"unknown pretrain proxy {recipe.pretrain!r}")
    if recipe.resize:
        groups = [[D.resize(im, recipe.resize) for im in g] for g in groups]
    return names, groups


def pretrain(
    recipe: Recipe,
    items: list[D.Item],
    run_dir: str | Path,
    gen_dir: str | Path | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
) -> Path:
    """Stage 2. Writes ``<run_dir>/pretrain.pt`` (resumes it if present) and returns its path."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "pretrain.pt"
    seed_all(recipe.seed)
    model = build(recipe.arch, recipe.mode, recipe.dim)
    if recipe.pretrain == "none":
        _save(ckpt, {"model": model.state_dict(), "step": 0, "done": True, "recipe": recipe.to_json(), "seconds": 0.0})
        return ckpt
    # Making the zoo builds torch modules (taef2), which draws from torch's RNG; keep the RNG as
    # it was so the run does not depend on whether the zoo cache already existed.
    rng_state = torch.get_rng_state()
    names, groups = pretrain_groups(recipe, items, run_dir.parent / "cache", gen_dir)
    torch.set_rng_state(rng_state)
    head = CosineClassifier(recipe.dim, len(names))
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.pretrain_lr, weight_decay=1e-4)
    sampler = D.CropSampler(groups, recipe.crop, recipe.seed, recipe.align, recipe.flip)
    step, seconds = 0, 0.0
    if ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        if st.get("done"):
            return ckpt
        model.load_state_dict(st["model"])
        head.load_state_dict(st["head"])
        opt.load_state_dict(st["opt"])
        sampler.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        step, seconds = st["step"], st["seconds"]
    total = recipe.pretrain_steps
    bar = _progress(total, step, f"pretrain[{recipe.pretrain}]", progress)
    model.train()
    ema = None
    t_last = time.perf_counter()

    def state(done: bool) -> dict:
        return {
            "model": model.state_dict(), "head": head.state_dict(), "opt": opt.state_dict(),
            "rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
            "seconds": seconds, "done": done, "recipe": recipe.to_json(), "classes": names,
        }  # fmt: skip

    while step < total:
        xb, yb = sampler.batch(recipe.pretrain_batch)
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, total, recipe.pretrain_lr)
        emb = model(torch.from_numpy(xb))
        loss = F.cross_entropy(head(emb), torch.from_numpy(yb))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        now = time.perf_counter()
        seconds += now - t_last
        t_last = now
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", crops_s=f"{step * recipe.pretrain_batch / max(seconds, 1e-9):.0f}")
        if step % 200 == 0 or step == total:
            _save(ckpt, state(step == total))
        if max_seconds is not None and seconds >= max_seconds:
            _save(ckpt, state(True))
            break
    bar.close()
    _save(ckpt, state(True))
    return ckpt


# ----------------------------------------------------------------------------- adaptation


def registration_set(items: list[D.Item], shots: int, labels: list[str] | None = None) -> dict[str, list[D.Item]]:
    """Train-split generated images per class: the first ``shots`` in split order (0 = all)."""
    by: dict[str, list[D.Item]] = {}
    for it in items:
        if it.kind == "generated" and it.split == "train" and (not labels or it.label in labels):
            by.setdefault(it.label, []).append(it)
    for k, v in by.items():
        v.sort(key=lambda it: hashlib.sha256(it.relpath.encode()).hexdigest())
        if shots:
            by[k] = v[:shots]
    return dict(sorted(by.items()))


def load_encoder(ckpt: str | Path):
    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    recipe = Recipe.from_dict(json.loads(st["recipe"]))
    model = build(recipe.arch, recipe.mode, recipe.dim)
    model.load_state_dict(st["model"])
    return model, recipe, st


def adapt(
    recipe: Recipe,
    items: list[D.Item],
    init: str | Path | None,
    run_dir: str | Path,
    progress: bool = True,
) -> Path:
    """Stage 3. Writes ``<run_dir>/adapt.pt`` (model, real prototype, classes) and returns it."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "adapt.pt"
    seed_all(recipe.seed + 1)
    model = build(recipe.arch, recipe.mode, recipe.dim)
    if init:
        st0 = torch.load(init, map_location="cpu", weights_only=False)
        r0 = Recipe.from_dict(json.loads(st0.get("recipe", "{}")))
        if (r0.arch, r0.mode, r0.dim) != (recipe.arch, recipe.mode, recipe.dim):
            raise ValueError(
                f"{init} is a {r0.arch}/{r0.mode}/D={r0.dim} checkpoint; adaptation was asked for "
                f"{recipe.arch}/{recipe.mode}/D={recipe.dim} (pass the same --arch/--mode/--dim)"
            )
        model.load_state_dict(st0["model"])
    reg = registration_set(items, recipe.shots, recipe.labels or None)
    reals = [it for it in items if it.kind == "real" and it.split == "train"]
    if not reg or not reals:
        raise D.DataError("adaptation needs train-split generated images and real images")
    classes = list(reg)
    gen_sampler = D.CropSampler([[D.resize(it.pixels, recipe.resize) for it in v] for v in reg.values()],
                                recipe.crop, recipe.seed + 2, recipe.align, recipe.flip)  # fmt: skip
    by_set: dict[str, list[np.ndarray]] = {}
    for it in reals:
        by_set.setdefault(it.label, []).append(D.resize(it.pixels, recipe.resize))
    real_sampler = D.CropSampler(list(by_set.values()), recipe.crop, recipe.seed + 3, recipe.align, recipe.flip)
    with torch.no_grad():
        model.eval()
        xr, _ = real_sampler.batch(64)
        p0 = F.normalize(model(torch.from_numpy(xr)).mean(0), dim=0)
    prototype = torch.nn.Parameter(p0.clone())
    center = CenterLoss(len(classes), recipe.dim, recipe.center_alpha)
    ce_head = CosineClassifier(recipe.dim, len(classes)) if recipe.adapt_loss == "ce" else None
    params = list(model.parameters()) + [prototype] + (list(ce_head.parameters()) if ce_head else [])
    opt = torch.optim.AdamW(params, lr=recipe.adapt_lr, weight_decay=1e-4)
    step, seconds = 0, 0.0
    if ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        if st.get("done"):
            return ckpt
        model.load_state_dict(st["model"])
        prototype.data.copy_(st["prototype"])
        center.load_state_dict(st["center"])
        opt.load_state_dict(st["opt"])
        if ce_head is not None:
            ce_head.load_state_dict(st["ce_head"])
        gen_sampler.rng.bit_generator.state, real_sampler.rng.bit_generator.state = st["rng"]
        step, seconds = st["step"], st["seconds"]
    n_real = max(1, int(round(recipe.adapt_batch * recipe.adapt_real_fraction)))
    n_gen = recipe.adapt_batch - n_real
    total = recipe.adapt_steps
    bar = _progress(total, step, f"adapt[{recipe.adapt_loss}]", progress)
    model.train()
    if recipe.freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    ema = None
    t_last = time.perf_counter()

    def state(done: bool) -> dict:
        return {
            "model": model.state_dict(), "prototype": F.normalize(prototype.detach(), dim=0),
            "center": center.state_dict(), "opt": opt.state_dict(),
            "ce_head": ce_head.state_dict() if ce_head else None,
            "rng": (gen_sampler.rng.bit_generator.state, real_sampler.rng.bit_generator.state),
            "step": step, "seconds": seconds, "done": done, "recipe": recipe.to_json(), "classes": classes,
            "init": str(init) if init else None,
            "registration": {k: [it.relpath for it in v] for k, v in reg.items()},
        }  # fmt: skip

    while step < total:
        xg, yg = gen_sampler.batch(n_gen)
        xr, _ = real_sampler.batch(n_real)
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, total, recipe.adapt_lr, warmup=min(50, total // 10))
        emb = model(torch.from_numpy(np.concatenate([xg, xr])))
        is_real = torch.zeros(len(emb), dtype=torch.bool)
        is_real[n_gen:] = True
        yt = torch.from_numpy(yg)
        eg = emb[:n_gen]
        l_a = F.cross_entropy(ce_head(eg), yt) if ce_head is not None else center(eg, yt)
        l_d = detection_loss(emb, is_real, prototype, recipe.tau)
        loss = lida_loss(l_a, l_d, recipe.lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ce_head is None:
            center.update(eg, yt)
        step += 1
        now = time.perf_counter()
        seconds += now - t_last
        t_last = now
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", l_a=f"{l_a.item():.3f}", l_d=f"{l_d.item():.3f}",
                        crops_s=f"{step * recipe.adapt_batch / max(seconds, 1e-9):.0f}")  # fmt: skip
        if step % 200 == 0:
            _save(ckpt, state(False))
    bar.close()
    _save(ckpt, state(True))
    return ckpt


# ----------------------------------------------------------------------------- embedding


@torch.no_grad()
def embed_images(
    model, images: list[np.ndarray], crop: int, count: int, align: int = 8, batch: int = 128, resize: int = 0
):
    """Image embeddings (L2-normalised mean of the serving crops' embeddings), ``[n, D]``."""
    model.eval()
    crops, owner = [], []
    for i, img in enumerate(images):
        c = D.eval_crops(D.resize(img, resize), crop, count, align)
        crops.append(c)
        owner += [i] * len(c)
    allc = np.concatenate(crops)
    outs = [model(torch.from_numpy(allc[i : i + batch])) for i in range(0, len(allc), batch)]
    e = torch.cat(outs).numpy()
    owner = np.asarray(owner)
    img = np.stack([e[owner == i].mean(0) for i in range(len(images))])
    return img / np.linalg.norm(img, axis=1, keepdims=True).clip(1e-12)
