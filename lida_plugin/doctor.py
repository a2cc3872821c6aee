"""``lida doctor``: what this installation can do, and what is wrong with it."""

from __future__ import annotations

import argparse
import json
import os
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
        report["model"]["threads"] = enc.threads
        report["model"]["feature_stage"] = _feature_stage_check(enc, args, crops, emb)
        if report["model"]["feature_stage"].startswith("disagrees"):
            report["problems"].append(f"model feature stage {report['model']['feature_stage']}")
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
    if not args.store and os.environ.get("LIDA_STORE") and not user_store_path().exists():
        # a warning, not a problem: a deployment may set it before its first `lida register`
        report["warnings"] = [f"LIDA_STORE={os.environ['LIDA_STORE']} does not exist (yet): no user store is searched"]
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_text(report)
    return 0 if not report["problems"] else 3


def _feature_stage_check(enc, args, crops: np.ndarray, emb: np.ndarray) -> str:
    """``"none"``, ``"graph"`` (the model has a stage, the graph computes it) or ``"numpy (...)"`` when lida
    computes it, checked against the graph's own computation on the self-test crops."""
    from .encoder import Encoder

    if enc.counts_input is None:
        return "graph" if enc.info.counts_input else "none"
    graph = Encoder(args.model, device="cpu", threads=1, feature_stage=False)
    diff = float(np.abs(graph.embed_crops(crops) - emb).max())
    stage = f"{enc.info.counts_input.get('kind')}/{enc.info.counts_input.get('version')}"
    if diff > 1e-5:
        return f"disagrees with the graph (max abs difference {diff:.2e}): set LIDA_COUNTS=graph and report it"
    return f"numpy ({stage}, agrees with the graph)"


def _print_text(report: dict) -> None:
    v = report["versions"]
    print(f"lida-plugin {v['lida-plugin']} on Python {report['python']} ({report['platform']})")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    print(f"providers available: {', '.join(report['providers']['available'])}")
    m = report.get("model", {})
    if "model_id" in m:
        print(f"model: {m['model_id']} ({m['path']}) on {m['providers'][0]}; self-test {m['self_test']}")
        print(f"encoder threads: {m.get('threads') or 'all cores'}; feature stage: {m.get('feature_stage', 'none')}")
    for s in report.get("stores", []):
        role = "read-only" if s["readonly"] else "user"
        counts = f"{s['generators']} generators, {s['exemplars']} exemplars"
        print(f"store: {s['path']} ({role}): {counts}, model {s['model_id']}")
    for w in report["warnings"]:
        print(f"warning: {w}")
    for w in report.get("warnings", []):
        print(f"warning: {w}")
    for p in report["problems"]:
        print(f"problem: {p}")
    print("ok" if not report["problems"] else f"{len(report['problems'])} problem(s)")
