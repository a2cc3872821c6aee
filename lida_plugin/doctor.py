"""``lida doctor``: what this installation can do, and what is wrong with it."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata

import numpy as np


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def run_doctor(args: argparse.Namespace) -> int:
    from .encoder import Encoder, choose_providers, resolve_model_path
    from .errors import LidaError
    from .store import bundled_store_path, open_stack, user_store_path

    report: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "problems": [], "warnings": []}
    dists = ("lida-plugin", "onnxruntime", "onnxruntime-gpu", "numpy", "pillow", "c2pa-python", "watchdog", "pluggy")
    report["versions"] = {d: _version(d) for d in dists}
    v = report["versions"]
    if v["onnxruntime"] and v["onnxruntime-gpu"]:
        report["warnings"].append(
            "both onnxruntime and onnxruntime-gpu are installed; they share one module and the CPU one may win:"
            " pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    import onnxruntime as ort

    report["providers"] = {"available": ort.get_available_providers()}
    try:
        report["providers"]["requested"] = choose_providers(args.device)
    except LidaError as exc:
        report["problems"].append(str(exc))
    try:
        report["model"] = {"path": str(resolve_model_path(args.model))}
        enc = Encoder(args.model, device=args.device, threads=args.threads, batch_size=args.batch_size)
        report["model"].update(model_id=enc.model_id, sha256=enc.sha256, providers=enc.providers,
                               info={k: v for k, v in enc.info.as_dict().items() if k != "real_prototype"})  # fmt: skip
        s = enc.info.crop_size
        crops = np.random.default_rng(0).integers(0, 256, (2, 3, s, s), dtype=np.uint8)
        emb = enc.embed_crops(crops)
        norms = np.linalg.norm(emb, axis=1)
        report["model"]["self_test"] = (
            "ok" if np.all(np.abs(norms - 1) < 1e-3) else f"embedding norms {norms.tolist()} are not 1"
        )
        if report["model"]["self_test"] != "ok":
            report["problems"].append(f"model self-test: {report['model']['self_test']}")
        try:
            stack = open_stack(enc, args.store, use_default=not args.no_default_store)
            report["stores"] = [s.info() for s in stack.stores]
            stack.close()
        except LidaError as exc:
            report["problems"].append(str(exc))
    except LidaError as exc:
        report["problems"].append(str(exc))
    report["store_paths"] = {"user": str(user_store_path(args.store)), "default": str(bundled_store_path())}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_text(report)
    return 0 if not report["problems"] else 3


def _print_text(report: dict) -> None:
    v = report["versions"]
    print(f"lida-plugin {v['lida-plugin']} on Python {report['python']} ({report['platform']})")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    print(f"providers available: {', '.join(report['providers']['available'])}")
    m = report.get("model", {})
    if "model_id" in m:
        print(f"model: {m['model_id']} ({m['path']}) on {m['providers'][0]}; self-test {m['self_test']}")
    for s in report.get("stores", []):
        role = "read-only" if s["readonly"] else "user"
        counts = f"{s['generators']} generators, {s['exemplars']} exemplars"
        print(f"store: {s['path']} ({role}): {counts}, model {s['model_id']}")
    for w in report["warnings"]:
        print(f"warning: {w}")
    for p in report["problems"]:
        print(f"problem: {p}")
    print("ok" if not report["problems"] else f"{len(report['problems'])} problem(s)")
