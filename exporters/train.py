"""Pre-training and few-shot adaptation loops (seeded, resumable, with progress bars).

Stage 2, :func:`pretrain` -- a classification proxy task on fingerprints, with a cosine-softmax
head on the embedding (so the proxy shapes the very space retrieval uses). Proxy data
(``Recipe.pretrain``):

* ``real``: train-split real photos, label = source-image identity (every photo its own class;
  crops of one photo share that photo's sensor/processing noise, the only thing its low bits
  can tell apart);
* ``zoo`` (default): train-split real photos pushed through the generator zoo (:mod:`lida_exporters.zoo`),
  label = pipeline, plus the untouched photos as one ``real`` class;
* ``zoo+real``: zoo pipelines as classes plus the photos by identity;
* ``none``: no pre-training (adaptation starts from random weights).

Stage 3, :func:`adapt` -- registration (gallery) images of the generated classes plus
train-split real images; loss ``L_A + lambda * L_D`` with the paper's center loss
(``Recipe.adapt_loss = "center"``) or cosine-softmax cross-entropy + ``lambda * L_D`` (``"ce"``:
the paper's ablation, and the shipped default because it measured better here; see
``docs/training.md``).

Checkpoints: ``<run>/pretrain.pt`` and ``<run>/adapt.pt`` are written (atomically) every 200
steps and at the end by the loop both stages share (:class:`_TrainLoop`); a run restarted with
the same directory resumes where the last checkpoint left it, with the same results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data as D
from .losses import LAMBDA, CenterLoss, CosineClassifier, detection_loss, lida_loss
from .models import build

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Both stages write their checkpoint every this many steps (and at the end).
CHECKPOINT_EVERY = 200


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


class DeviceError(ValueError):
    """A ``--device`` that this torch cannot train on."""


def resolve_device(device: str = "cpu") -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:N``) or ``auto`` (CUDA when torch sees a GPU, else the CPU). Asking
    for CUDA where torch sees none is a :class:`DeviceError` that says so, not a failure mid-run."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"--device {device}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {device}: training runs on cpu or cuda")
    return dev


def _cosine_lr(step: int, total: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file next to it, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=2.0)


def _optimise(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


#: What a stage's step function returns: the loss and extra progress-bar fields.
StepResult = tuple[float, dict[str, str]]


@dataclass
class _TrainLoop:
    """The resumable skeleton both training stages share.

    A checkpoint holds ``model``, the stage's own ``parts()``, the optimiser, the crop samplers'
    RNG states (``rng``: one state, or a tuple for several samplers), torch's RNG state, ``step``,
    ``seconds`` (training time), ``done`` and ``meta`` (recipe, classes, ...). :meth:`run`
    resumes from ``ckpt`` (a finished one is returned as is), then runs ``step_fn`` until
    ``total`` steps with the learning rate ``lr(step)``, a progress bar (loss EMA, crops/s), a
    checkpoint every :data:`CHECKPOINT_EVERY` steps and a final, ``done`` one.
    """

    ckpt: Path
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    samplers: list[D.CropSampler]
    parts: Callable[[], dict]
    restore: Callable[[dict], None]
    meta: dict
    total: int
    lr: Callable[[int], float]
    desc: str
    crops_per_step: int
    ema_weight: float

    def state(self, step: int, seconds: float, done: bool) -> dict:
        rng = [s.rng.bit_generator.state for s in self.samplers]
        return {
            "model": self.model.state_dict(), **self.parts(), "opt": self.opt.state_dict(),
            "rng": rng[0] if len(rng) == 1 else tuple(rng), "torch_rng": torch.get_rng_state(),
            "step": step, "seconds": seconds, "done": done, **self.meta,
        }  # fmt: skip

    def resume(self) -> tuple[int, float] | None:
        """``(step, seconds)`` to continue from (``(0, 0.0)`` without a checkpoint); None if finished."""
        if not self.ckpt.is_file():
            return 0, 0.0
        st = load_checkpoint(self.ckpt)
        if st.get("done"):
            return None
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        rng = [st["rng"]] if len(self.samplers) == 1 else st["rng"]
        for sampler, state in zip(self.samplers, rng, strict=True):
            sampler.rng.bit_generator.state = state
        if "torch_rng" in st:  # adapt.pt files written before the shared loop do not carry it
            torch.set_rng_state(st["torch_rng"])
        self.restore(st)
        return st["step"], st["seconds"]

    def run(self, step_fn: Callable[[], StepResult], progress: bool, max_seconds: float | None = None) -> Path:
        resumed = self.resume()
        if resumed is None:
            return self.ckpt
        step, seconds = resumed
        bar = _progress(self.total, step, self.desc, progress)
        ema, t_last = None, time.perf_counter()
        while step < self.total:
            for g in self.opt.param_groups:
                g["lr"] = self.lr(step)
            loss, fields = step_fn()
            step += 1
            now = time.perf_counter()
            seconds += now - t_last
            t_last = now
            ema = loss if ema is None else (1 - self.ema_weight) * ema + self.ema_weight * loss
            bar.update(1)
            crops_s = step * self.crops_per_step / max(seconds, 1e-9)
            bar.set_postfix(loss=f"{ema:.3f}", **fields, crops_s=f"{crops_s:.0f}")
            if step % CHECKPOINT_EVERY == 0:
                save_checkpoint(self.ckpt, self.state(step, seconds, False))
            if max_seconds is not None and seconds >= max_seconds:
                break
        bar.close()
        # a --max-seconds stop is a pause, not the end: the checkpoint is not marked done, so the same
        # command continues the schedule (a later session's budget) to the same tensors as one run
        save_checkpoint(self.ckpt, self.state(step, seconds, step >= self.total))
        if step < self.total:
            log.warning("%s paused at step %d of %d after %.0f s of training (--max-seconds); run the same"
                        " command again to continue", self.desc, step, self.total, seconds)  # fmt: skip
        return self.ckpt


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
    device: str = "cpu",
) -> Path:
    """Stage 2. Writes ``<run_dir>/pretrain.pt`` (resumes it if present) and returns its path.
    ``device``: see :func:`resolve_device`; crops are cut on the CPU and moved per batch, checkpoints
    are the same files on either (loaded to the CPU)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "pretrain.pt"
    dev = resolve_device(device)
    seed_all(recipe.seed)
    model = build(recipe.arch, recipe.mode, recipe.dim)
    if recipe.pretrain == "none":
        save_checkpoint(ckpt, {"model": model.state_dict(), "step": 0, "done": True, "recipe": recipe.to_json(),
                               "seconds": 0.0})  # fmt: skip
        return ckpt
    # Making the zoo builds torch modules (taef2), which draws from torch's RNG; keep the RNG as
    # it was so the run does not depend on whether the zoo cache already existed.
    rng_state = torch.get_rng_state()
    names, groups = pretrain_groups(recipe, items, run_dir.parent / "cache", gen_dir)
    torch.set_rng_state(rng_state)
    head = CosineClassifier(recipe.dim, len(names))
    model.to(dev)
    head.to(dev)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=recipe.pretrain_lr,
                            weight_decay=1e-4)  # fmt: skip
    sampler = D.CropSampler(groups, recipe.crop, recipe.seed, recipe.align, recipe.flip)

    def step_fn() -> StepResult:
        xb, yb = sampler.batch(recipe.pretrain_batch)
        loss = F.cross_entropy(head(model(torch.from_numpy(xb).to(dev))), torch.from_numpy(yb).to(dev))
        _optimise(opt, loss)
        return loss.item(), {}

    loop = _TrainLoop(
        ckpt, model, opt, [sampler],
        parts=lambda: {"head": head.state_dict()},
        restore=lambda st: head.load_state_dict(st["head"]),
        meta={"recipe": recipe.to_json(), "classes": names},
        total=recipe.pretrain_steps,
        lr=lambda step: _cosine_lr(step, recipe.pretrain_steps, recipe.pretrain_lr),
        desc=f"pretrain[{recipe.pretrain}]", crops_per_step=recipe.pretrain_batch, ema_weight=0.02,
    )  # fmt: skip
    model.train()
    return loop.run(step_fn, progress, max_seconds)


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
    st = load_checkpoint(ckpt)
    recipe = Recipe.from_dict(json.loads(st["recipe"]))
    model = build(recipe.arch, recipe.mode, recipe.dim)
    model.load_state_dict(st["model"])
    return model, recipe, st


def _load_init(model: torch.nn.Module, recipe: Recipe, init: str | Path) -> None:
    """Load the pre-trained checkpoint ``init`` into ``model``; it must be the recipe's encoder."""
    st0 = load_checkpoint(init)
    r0 = Recipe.from_dict(json.loads(st0.get("recipe", "{}")))
    if (r0.arch, r0.mode, r0.dim) != (recipe.arch, recipe.mode, recipe.dim):
        raise ValueError(
            f"{init} is a {r0.arch}/{r0.mode}/D={r0.dim} checkpoint; adaptation was asked for "
            f"{recipe.arch}/{recipe.mode}/D={recipe.dim} (pass the same --arch/--mode/--dim)"
        )
    model.load_state_dict(st0["model"])


def _adapt_samplers(recipe: Recipe, reg: dict[str, list[D.Item]], reals: list[D.Item]):
    """Crop samplers over the registration images (one class each) and the real photos (one class per set)."""
    gen_sampler = D.CropSampler([[D.resize(it.pixels, recipe.resize) for it in v] for v in reg.values()],
                                recipe.crop, recipe.seed + 2, recipe.align, recipe.flip)  # fmt: skip
    by_set: dict[str, list[np.ndarray]] = {}
    for it in reals:
        by_set.setdefault(it.label, []).append(D.resize(it.pixels, recipe.resize))
    real_sampler = D.CropSampler(list(by_set.values()), recipe.crop, recipe.seed + 3, recipe.align, recipe.flip)
    return gen_sampler, real_sampler


@torch.no_grad()
def _initial_prototype(model: torch.nn.Module, real_sampler: D.CropSampler) -> torch.Tensor:
    """Where the real prototype starts: the normalised mean embedding of 64 real crops."""
    model.eval()
    xr, _ = real_sampler.batch(64)
    return F.normalize(model(torch.from_numpy(xr).to(_device_of(model))).mean(0), dim=0)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` the BatchNorm layers keep their (pre-trained) statistics."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def adapt(
    recipe: Recipe,
    items: list[D.Item],
    init: str | Path | None,
    run_dir: str | Path,
    progress: bool = True,
    device: str = "cpu",
) -> Path:
    """Stage 3. Writes ``<run_dir>/adapt.pt`` (model, real prototype, classes) and returns it;
    ``device`` as for :func:`pretrain`."""
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    seed_all(recipe.seed + 1)
    model = build(recipe.arch, recipe.mode, recipe.dim)
    if init:
        _load_init(model, recipe, init)
    model.to(dev)
    reg = registration_set(items, recipe.shots, recipe.labels or None)
    reals = [it for it in items if it.kind == "real" and it.split == "train"]
    if not reg or not reals:
        raise D.DataError("adaptation needs train-split generated images and real images")
    classes = list(reg)
    gen_sampler, real_sampler = _adapt_samplers(recipe, reg, reals)
    prototype = torch.nn.Parameter(_initial_prototype(model, real_sampler).clone())
    center = CenterLoss(len(classes), recipe.dim, recipe.center_alpha).to(dev)
    ce_head = CosineClassifier(recipe.dim, len(classes)).to(dev) if recipe.adapt_loss == "ce" else None
    params = list(model.parameters()) + [prototype] + (list(ce_head.parameters()) if ce_head else [])
    opt = torch.optim.AdamW(params, lr=recipe.adapt_lr, weight_decay=1e-4)
    n_real = max(1, int(round(recipe.adapt_batch * recipe.adapt_real_fraction)))
    n_gen = recipe.adapt_batch - n_real

    def step_fn() -> StepResult:
        xg, yg = gen_sampler.batch(n_gen)
        xr, _ = real_sampler.batch(n_real)
        emb = model(torch.from_numpy(np.concatenate([xg, xr])).to(dev))
        is_real = torch.zeros(len(emb), dtype=torch.bool, device=dev)
        is_real[n_gen:] = True
        yt = torch.from_numpy(yg).to(dev)
        eg = emb[:n_gen]
        l_a = F.cross_entropy(ce_head(eg), yt) if ce_head is not None else center(eg, yt)
        l_d = detection_loss(emb, is_real, prototype, recipe.tau)
        loss = lida_loss(l_a, l_d, recipe.lam)
        _optimise(opt, loss)
        if ce_head is None:
            center.update(eg, yt)
        return loss.item(), {"l_a": f"{l_a.item():.3f}", "l_d": f"{l_d.item():.3f}"}

    def restore(st: dict) -> None:
        # the parameter as it was (its norm drifts from 1 and shapes its updates); files from before
        # it was saved only have the normalised copy, and resume not quite where they stopped
        prototype.data.copy_(st.get("prototype_param", st["prototype"]))
        center.load_state_dict(st["center"])
        if ce_head is not None:
            ce_head.load_state_dict(st["ce_head"])

    loop = _TrainLoop(
        run_dir / "adapt.pt", model, opt, [gen_sampler, real_sampler],
        parts=lambda: {"prototype": F.normalize(prototype.detach(), dim=0), "prototype_param": prototype.detach(),
                       "center": center.state_dict(), "ce_head": ce_head.state_dict() if ce_head else None},
        restore=restore,
        meta={"recipe": recipe.to_json(), "classes": classes, "init": str(init) if init else None,
              "registration": {k: [it.relpath for it in v] for k, v in reg.items()}},
        total=recipe.adapt_steps,
        lr=lambda step: _cosine_lr(step, recipe.adapt_steps, recipe.adapt_lr, warmup=min(50, recipe.adapt_steps // 10)),
        desc=f"adapt[{recipe.adapt_loss}]", crops_per_step=recipe.adapt_batch, ema_weight=0.05,
    )  # fmt: skip
    _train_mode(model, recipe.freeze_bn)
    return loop.run(step_fn, progress)


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
    dev = _device_of(model)
    outs = [model(torch.from_numpy(allc[i : i + batch]).to(dev)).cpu() for i in range(0, len(allc), batch)]
    e = torch.cat(outs).numpy()
    owner = np.asarray(owner)
    img = np.stack([e[owner == i].mean(0) for i in range(len(images))])
    return img / np.linalg.norm(img, axis=1, keepdims=True).clip(1e-12)
