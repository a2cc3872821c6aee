"""``lida-train`` (``python -m lida_exporters``): pretrain | adapt | export | evaluate | zoo | lossy | reproduce |
spam."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from .train import DEFAULT_DATA, Recipe

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = REPO / "runs"
DEFAULT_MODEL = REPO / "lida_plugin" / "data" / "encoder.onnx"
DEFAULT_STORE = REPO / "lida_plugin" / "data" / "default-store.sqlite"

_HELP = {
    "arch": "encoder architecture",
    "mode": "fingerprint mode: scaled ((x&7)*36), binary (255*(x&7!=0)) or rgb (baseline)",
    "pretrain": "pre-training proxy: zoo+real, zoo, real or none",
    "adapt_loss": "adaptation attribution loss: center (paper) or ce (ablation)",
    "shots": "registration images per generated class for adaptation (0 = whole train split)",
    "labels": "comma-separated generated classes to adapt on (default: all)",
    "zoo_pipelines": "comma-separated zoo pipelines (default: every available one)",
    "tau": "detection temperature",
    "lam": "weight lambda of the detection loss",
}


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    from .models import list_models

    g = p.add_argument_group("recipe (defaults = the shipped model's recipe)")
    for f in dataclasses.fields(Recipe):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        h = _HELP.get(f.name, f.name.replace("_", " ")) + f" (default: {default})"
        if f.name == "arch":
            g.add_argument(flag, choices=list_models(), default=default, help=h)
        elif isinstance(default, bool):
            g.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=default, help=h)
        elif isinstance(default, list):
            g.add_argument(flag, type=lambda s: [x for x in s.split(",") if x], default=default, help=h)
        else:
            g.add_argument(flag, type=type(default), default=default, help=h)


def _recipe(args) -> Recipe:
    return Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default=str(DEFAULT_DATA), help="data root with generated/ and real/ (default: %(default)s)"
    )
    p.add_argument(
        "--run", default=str(DEFAULT_RUNS / "default"), help="run directory for checkpoints (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument(
        "--device", default="cpu", help="train on cpu, cuda[:N] or auto (CUDA if torch sees a GPU; default: cpu)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _items(args):
    from .data import load_folder

    return load_folder(args.data)


def _threads(args) -> None:
    import torch

    torch.set_num_threads(max(1, args.threads))


def cmd_pretrain(args) -> int:
    from .train import pretrain

    _threads(args)
    r = _recipe(args)
    ck = pretrain(r, _items(args), args.run, args.generators, not args.no_progress, args.max_seconds, args.device)
    print(ck)
    return 0


def cmd_adapt(args) -> int:
    from .train import adapt

    _threads(args)
    init = args.init or (Path(args.run) / "pretrain.pt")
    if init and not Path(init).is_file():
        if args.pretrain != "none":
            print(f"error: no pre-trained checkpoint {init}; run `lida-train pretrain` first", file=sys.stderr)
            return 2
        init = None
    ck = adapt(_recipe(args), _items(args), init, args.run, not args.no_progress, args.device)
    print(ck)
    return 0


def cmd_export(args) -> int:
    from .export import export_checkpoint

    _threads(args)
    ckpt = args.checkpoint or (Path(args.run) / "adapt.pt")
    path, info, stats = export_checkpoint(ckpt, _items(args), args.out, args.fpr, args.model_id)
    print(json.dumps({"model": str(path), "model_id": info.model_id, **stats}, indent=1))
    return 0


def evaluate_checkpoint(ckpt, items, shots, draws) -> dict:
    import numpy as np

    from .evaluate import report
    from .train import embed_images, load_encoder

    model, r, st = load_encoder(ckpt)
    t = time.perf_counter()
    emb = embed_images(model, [it.pixels for it in items], r.crop, r.crop_count, r.align, resize=r.resize)
    if "prototype" in st:
        proto = st["prototype"].numpy()
    else:  # not adapted: the normalised mean of the train-split real embeddings (as export does)
        sel = [i for i, it in enumerate(items) if it.kind == "real" and it.split == "train"]
        proto = emb[sel].mean(0) if sel else None
        proto = proto / np.linalg.norm(proto) if proto is not None else None
    out = report(emb, items, shots, draws, proto)
    out["embed_seconds"] = round(time.perf_counter() - t, 1)
    out["train_seconds"] = round(float(st.get("seconds", 0.0)), 1)
    return out


def cmd_evaluate(args) -> int:
    _threads(args)
    items = _items(args)
    res = {str(c): evaluate_checkpoint(c, items, args.shots, args.draws) for c in args.checkpoints}
    print(json.dumps(res, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))
    return 0


def cmd_zoo(args) -> int:
    from . import zoo as Z
    from .data import load_folder

    reals = load_folder(args.data, split="train", kinds=("real",))
    pipes = args.pipelines or Z.available(args.generators or Z.DEFAULT_GENERATORS)
    Z.cached_zoo([r.pixels for r in reals], [r.relpath for r in reals], pipes, Path(args.run).parent / "cache",
                 args.generators or Z.DEFAULT_GENERATORS)  # fmt: skip
    print(f"zoo cached: {len(reals)} photos x {len(pipes)} pipelines")
    return 0


def register_default_store(model: Path, store: Path, data: str, include_ldm: bool) -> list[str]:
    """Register train-split exemplars of every named generator with the runtime's CLI."""
    from .data import load_folder

    items = load_folder(data, split="train", kinds=("generated",))
    by: dict[str, list] = {}
    for it in items:
        if include_ldm or not it.label.startswith("ldm-sr"):
            by.setdefault(it.label, []).append(it)
    for p in (store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
        p.unlink(missing_ok=True)
    done = []
    for lab, its in sorted(by.items()):
        cmd = [sys.executable, "-m", "lida_plugin.cli", "register", "--store", str(store), "--model", str(model)]
        cmd += ["--generator", lab, "--family", its[0].family] + [str(Path(data) / it.relpath) for it in its]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        done.append(f"{lab} ({len(its)})")
    from lida_plugin.store import ExemplarStore

    st = ExemplarStore(store)
    try:
        st.compact()  # no WAL, vacuumed: ready to ship as package data
    finally:
        st.close()
    return done


def cmd_reproduce(args) -> int:
    from .export import export_checkpoint
    from .train import adapt, pretrain

    _threads(args)
    t0 = time.perf_counter()
    r = _recipe(args)
    run = Path(args.run)
    items = _items(args)
    log: dict = {"recipe": dataclasses.asdict(r), "command": " ".join(sys.argv)}
    tp = time.perf_counter()
    ck_p = pretrain(r, items, run, args.generators, not args.no_progress, device=args.device)
    log["pretrain_wall_s"] = round(time.perf_counter() - tp, 1)
    ta = time.perf_counter()
    ck_a = adapt(r, items, ck_p, run, not args.no_progress, args.device)
    log["adapt_wall_s"] = round(time.perf_counter() - ta, 1)
    open_labels = None
    if args.store_include_ldm:
        open_labels = {it.label for it in items if it.kind == "generated"}
    path, info, stats = export_checkpoint(ck_a, items, args.out, args.fpr, args.model_id,
                                          {"pretrain_wall_s": log["pretrain_wall_s"]}, open_labels)  # fmt: skip
    log.update(model=str(path), model_id=info.model_id, export=stats, size_bytes=path.stat().st_size)
    if not args.skip_eval:
        log["eval_pretrained"] = evaluate_checkpoint(ck_p, items, (1, 5, 10), 1)
        log["eval_adapted_full_train"] = evaluate_checkpoint(ck_a, items, (1, 5, 10), 1)
    if not args.skip_store:
        log["store"] = str(args.store)
        log["store_generators"] = register_default_store(path, Path(args.store), args.data, args.store_include_ldm)
    log["wall_s"] = round(time.perf_counter() - t0, 1)
    (run / "reproduce.json").write_text(json.dumps(log, indent=1))
    print(json.dumps(log, indent=1))
    return 0


def _variants(s: str) -> list[tuple[str, int, bool]]:
    out = []
    for part in (x for x in s.split(",") if x):
        bits = part.split(":")
        if len(bits) != 3 or bits[2] not in ("family", "image"):
            raise argparse.ArgumentTypeError(f"{part!r}: expected FEATURE:MAX_SIDE:family|image")
        out.append((bits[0], int(bits[1]), bits[2] == "family"))
    return out


def cmd_lossy(args) -> int:
    import logging
    import shlex

    from .lossy import DEFAULT_CACHE, LossyRecipe, load_images, probe, train, write_detector

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _threads(args)
    recipe = LossyRecipe(seed=args.seed, feature=args.feature, max_side=args.max_side, copies=args.copies,
                         l2=args.l2, family_balanced=not args.per_image_weights,
                         threshold_from=args.threshold_from)  # fmt: skip
    cache = None if args.no_cache else DEFAULT_CACHE
    images = load_images(args.data)
    if args.probe:
        rows = probe(images, recipe, args.probe, cache, not args.no_progress)
        print("| feature | max side | weights | band | held-out AUC | held-out (named) | leave-family-out mean | min |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            for band, a in r["auc"].items():
                if band == "all":
                    continue
                w = "family" if r["family_balanced"] else "image"
                print(
                    f"| {r['feature']} | {r['max_side']} | {w} | {band} | {a['heldout']:.3f} | "
                    f"{a['heldout_named']:.3f} | {a['leave_family_out']:.3f} | {a['leave_family_out_min']:.3f} |"
                )
        print("\n| feature | max side | weights | photos of an unseen real set flagged at q85 (5% target): pooled |"
              " worst set | AUC of an unseen real set vs the held-out generated: mean over sets |"
              " held-out generated caught at those thresholds: mean |\n|---|---|---|---|---|---|---|")  # fmt: skip
        for r in rows:
            lr = r["leave_real_set_out"]
            if lr is None:
                continue
            worst = max(lr["per_set"], key=lambda k: lr["per_set"][k]["fpr"])
            w = "family" if r["family_balanced"] else "image"
            print(f"| {r['feature']} | {r['max_side']} | {w} | {lr['pooled_fpr']:.3f} | {lr['max_fpr']:.3f} {worst}"
                  f" ({lr['per_set'][worst]['n']}) | {lr['mean_auc']:.3f} | {lr['mean_tpr']:.3f} |")  # fmt: skip
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(rows, indent=1))
        return 0
    d = train(recipe, args.data, cache, not args.no_lofo, not args.no_progress, images)
    argv = ["lida-train", "lossy"] + [a for a in sys.argv[2:]] if sys.argv[1:2] == ["lossy"] else None
    d["command"] = shlex.join(argv) if argv else None
    out = write_detector(d, args.out)
    print(json.dumps({"out": str(out), "calibrated": d["calibrated"], "threshold": d["threshold"],
                      "recipe_hash": d["recipe_hash"], "seconds": d["seconds"],
                      **{b: {k: v for k, v in a.items() if k != "cross_calibrated"} for b, a in d["auc"].items()}},
                     indent=1))  # fmt: skip
    return 0


def spam_recipe(args) -> SpamRecipe:  # noqa: F821 (imported below: no torch when parsing)
    """The :class:`~lida_exporters.spam_model.SpamRecipe` that ``lida-train spam``'s arguments ask for (its
    defaults: the dataclass's, which tests/test_spam_model.py checks)."""
    from .spam_model import SpamRecipe

    return SpamRecipe(T=args.T, colour=not args.no_colour, crop_count=args.crop_count, pca_dim=args.pca_dim,
                      eps=args.eps, dim=args.dim, head_l2=args.head_l2, fpr=args.fpr,
                      fpr_confidence=args.fpr_confidence, open_unknown_accept=args.open_unknown_accept,
                      det_column=args.det_column, zoo_every=args.zoo_every,
                      family_wrong=args.family_wrong, det_resize_copies=args.det_resize_copies,
                      det_camera_copies=args.det_camera_copies, det_rzoo=args.det_rzoo,
                      det_jpeg_copies=args.det_jpeg_copies, det_sharpen_copies=args.det_sharpen_copies,
                      sharpen_generated_only=args.sharpen_generated_only,
                      det_noise_copies=args.det_noise_copies,
                      noise_sd=args.noise_sd, noise_generated=args.noise_generated, head_noise=args.head_noise,
                      column_noise=args.column_noise)  # fmt: skip


def _sd_range(s: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants LO,HI (two numbers), got {s!r}") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"wants 0 <= LO <= HI, got {s!r}")
    return lo, hi


def cmd_spam(args) -> int:
    """The residual-statistics model (``exporters/spam_model.py``): fit on the train split, export,
    and (unless ``--skip-store``) register the default store with it."""
    from lida_plugin.evaluate.corpus import CorpusError, load_corpus

    from .spam_model import fit_and_export

    t0 = time.perf_counter()
    r = spam_recipe(args)
    try:
        entries = load_corpus(args.data)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = Path(args.run) / "cache"
    path, info, stats = fit_and_export(entries, args.out, r, args.model_id, not args.no_progress, cache)
    log: dict = {"command": " ".join(["lida-train", *sys.argv[1:]]), "model": str(path), "model_id": info.model_id,
                 **stats}  # fmt: skip
    if not args.skip_store:
        log["store"] = str(args.store)
        log["store_generators"] = register_default_store(path, Path(args.store), args.data, args.store_include_ldm)
    log["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(args.run).mkdir(parents=True, exist_ok=True)
    (Path(args.run) / "spam.json").write_text(json.dumps(log, indent=1))
    print(json.dumps(log, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lida-train", description="Train and export LIDA encoders (PyTorch -> ONNX).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="stage 2: proxy pre-training on real fingerprints / the generator zoo")
    _common(p)
    _add_recipe_args(p)
    p.add_argument("--generators", help="folder with the zoo networks (default: ../shared/generators)")
    p.add_argument(
        "--max-seconds",
        type=float,
        help="pause after this much training time: the checkpoint is kept, not marked done, and the same"
        " command continues it",
    )
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("adapt", help="stage 3: few-shot adaptation (center loss + real-prototype detection loss)")
    _common(p)
    _add_recipe_args(p)
    p.add_argument("--init", help="pre-trained checkpoint (default: <run>/pretrain.pt)")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("export", help="export a checkpoint to ONNX with calibrated contract metadata")
    _common(p)
    p.add_argument("--checkpoint", help="checkpoint to export (default: <run>/adapt.pt)")
    p.add_argument("--out", default=str(DEFAULT_MODEL), help="ONNX file to write (default: %(default)s)")
    p.add_argument("--fpr", type=float, default=0.05, help="false-positive rate on held-out reals (default: 0.05)")
    p.add_argument("--model-id", help="model id (default: derived from the recipe hash)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="quick held-out retrieval check (Rank-1/mAP at k shots)")
    _common(p)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--draws", type=int, default=1, help="gallery draws to average (default: 1)")
    p.add_argument("--json-out")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("zoo", help="make (and cache) the generator-zoo images")
    _common(p)
    p.add_argument("--generators")
    p.add_argument("--pipelines", type=lambda s: [x for x in s.split(",") if x], default=[])
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("lossy", help="fit, calibrate and measure the lossy-input (JPEG/resize) detector")
    _common(p)
    p.add_argument("--out", default=str(REPO / "lida_plugin" / "data" / "lossy-detector.json"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--feature", default="spam-yccd", help="a feature of lida_plugin.lossy.FEATURES (default: %(default)s)"
    )
    p.add_argument("--max-side", type=int, default=512, help="centre window the features read (default: %(default)s)")
    p.add_argument("--copies", type=int, default=4, help="random JPEG/resized copies per train image (default: 4)")
    p.add_argument("--l2", type=float, default=1e-2, help="L2 weight of the logistic regression (default: 0.01)")
    p.add_argument("--per-image-weights", action="store_true", help="weight generated images equally, not families")
    p.add_argument("--no-lofo", action="store_true", help="skip leave-family-out (then it cannot be calibrated)")
    p.add_argument("--no-cache", action="store_true", help="do not cache features under runs/lossy")
    p.add_argument("--threshold-from", choices=("heldout", "real-set-out"), default="real-set-out",
                   help="calibrate the threshold on the held-out real photos, or on each real set scored by a "
                   "detector fitted without it (default: %(default)s)")  # fmt: skip
    p.add_argument("--probe", type=_variants, help="compare FEATURE:MAX_SIDE:family|image,... (writes no file)")
    p.add_argument("--json-out", help="with --probe: write the rows as JSON here")
    p.set_defaults(func=cmd_lossy)

    p = sub.add_parser("reproduce", help="the whole default recipe: pretrain, adapt, export, evaluate, default store")
    _common(p)
    _add_recipe_args(p)
    p.add_argument("--generators")
    p.add_argument("--out", default=str(DEFAULT_MODEL))
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--store-include-ldm", action="store_true", help="also register the 7 ldm-sr research checkpoints")
    p.add_argument("--fpr", type=float, default=0.05)
    p.add_argument("--model-id")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--skip-store", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "spam",
        help="the residual-statistics model: SPAM per crop + a fitted linear map + a logistic detection head"
        " (no network training; minutes on a CPU), then the default store",
    )
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data root (default: %(default)s)")
    p.add_argument("--run", default=str(DEFAULT_RUNS / "spam"), help="run directory (feature cache, spam.json)")
    p.add_argument("--out", default=str(DEFAULT_MODEL), help="ONNX file to write (default: %(default)s)")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--store-include-ldm", action="store_true", help="also register the 7 ldm-sr research checkpoints")
    p.add_argument("--skip-store", action="store_true", help="do not rebuild the default store")
    p.add_argument("--T", type=int, default=3, help="SPAM truncation threshold (default: %(default)s)")
    p.add_argument("--no-colour", action="store_true",
                   help="SPAM of R, G, B only (the default adds the R - G and B - G channels)")  # fmt: skip
    p.add_argument("--crop-count", type=int, default=16, help="crops per image (default: %(default)s)")
    p.add_argument("--pca-dim", type=int, default=256, help="PCA dimensions before whitening (default: %(default)s)")
    p.add_argument("--eps", type=float, default=0.01, help="whitening eigenvalue floor (default: %(default)s)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimensions (default: %(default)s)")
    p.add_argument("--head-l2", type=float, default=3e-4,
                   help="detection head L2 (default: %(default)s; the version-1 heads: 0.01)")  # fmt: skip
    p.add_argument(
        "--det-column",
        type=float,
        default=0.2,
        help="weight of the detection column appended to the map, 0 = none (default: %(default)s)",
    )
    p.add_argument("--fpr", type=float, default=0.05, help="false-positive rate on held-out reals (default: 0.05)")
    p.add_argument(
        "--fpr-confidence",
        type=float,
        default=0.9,
        help="the stated FPR holds with this confidence (0: the point estimate; default: %(default)s)",
    )
    p.add_argument(
        "--open-unknown-accept",
        type=float,
        default=0.05,
        help="open-set threshold: name an unregistered generator at most this often, at --fpr-confidence"
        " (0: best balanced accuracy; default: %(default)s)",
    )
    p.add_argument(
        "--family-wrong",
        type=float,
        default=0.0,
        help="below the open-set threshold, name a family alone when an image of an unregistered family would"
        " get one at most this often, at --fpr-confidence (lida.family_margin; e.g. 0.05; 0: never, the default:"
        " docs/evaluation.md, 'Naming a family alone')",
    )
    p.add_argument(
        "--zoo-every",
        type=int,
        default=0,
        help="also fit the map on every K-th crop of the generator zoo, its pipelines as classes (0: not;"
        " docs/training.md)",
    )
    p.add_argument(
        "--det-resize-copies",
        type=int,
        default=1,
        help="also fit the detection column and head on K resized copies of every train image (a downscaled"
        " photo is still real; 0: not, the models before 2026-12-02; default: %(default)s; docs/evaluation.md,"
        " 'Real photos downscaled')",
    )
    p.add_argument(
        "--det-camera-copies",
        type=int,
        default=0,
        help="also fit the detection column and head on K camera-processed copies of every train image"
        " (demosaicing, sharpening, noise; measured, not used: docs/evaluation.md, 'Camera originals')",
    )
    p.add_argument(
        "--det-jpeg-copies",
        type=int,
        default=0,
        help="also fit the detection column and head on K JPEG round trips of every train image (quality 70-98,"
        " decoded back: a PNG made from a JPEG; docs/evaluation.md, 'JPEG history')",
    )
    p.add_argument(
        "--det-sharpen-copies",
        type=int,
        default=0,
        help="also fit the detection column and head on K sharpened copies of every train image, generated and real"
        " (an unsharp mask; sharpening does not make a generated image real; measured, not in the bundled model:"
        " default: %(default)s; docs/evaluation.md, 'Sharpening')",
    )
    p.add_argument(
        "--sharpen-generated-only",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the sharpened copies are of the generated train images only (default: %(default)s)",
    )
    p.add_argument(
        "--det-noise-copies",
        type=int,
        default=3,
        help="also fit the detection column and head on K copies of every train real image with Gaussian noise"
        " (sd uniform in --noise-sd; light noise or a dithered export does not make a photo generated; 0: not, the"
        " models before 2026-12-08; default: %(default)s; docs/evaluation.md, 'Light noise')",
    )
    p.add_argument(
        "--noise-sd",
        type=_sd_range,
        default=(0.25, 2.0),
        metavar="LO,HI",
        help="the noised copies' sd range in grey levels (default: %(default)s)",
    )
    p.add_argument(
        "--noise-generated",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the generated train images get noised copies too (default: %(default)s)",
    )
    p.add_argument(
        "--head-noise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a version-2 detection head that also reads the image's noise floor, calibrated on noised versions of"
        " the held-out real photos too (--no-head-noise: version 1, the models before 2026-12-08; default:"
        " %(default)s; docs/evaluation.md, 'A head that reads the noise floor')",
    )
    p.add_argument(
        "--column-noise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit the detection column (a retrieval dimension) on the noised copies too; --no-column-noise: the"
        " head only (default: %(default)s)",
    )
    p.add_argument(
        "--det-rzoo",
        type=int,
        default=0,
        help="also fit the detection column and head on N random decoders' images as generated (measured, not"
        " used: docs/training.md, 'Random decoders')",
    )
    p.add_argument("--model-id")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_spam)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "device", "cpu") != "cpu":  # before any data is read
            from .train import resolve_device

            resolve_device(args.device)
        return args.func(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        from .train import DeviceError

        if not isinstance(exc, DeviceError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
