#!/usr/bin/env python
"""Runtime throughput and peak memory, side by side with the authors' configuration.

Prints a Markdown table. Every row runs in its own fresh subprocess so its peak RSS is its own.

    python benchmarks/runtime_throughput.py [--model M] [--images 32] [--threads 2]
    python benchmarks/runtime_throughput.py --compare-model OLD.onnx --compare-store OLD.sqlite

With ``--compare-model`` a second encoder is measured in the same run, each of its rows right
after the same row of the first model (so load on a shared machine hits both alike), and the
ratios of its images/s to the first model's are printed.

Rows (512×512 PNGs made by the script, lossless, with random low bits):

* fingerprint: decode + crop grid + numpy ``scaled`` fingerprint (no encoder)
* encoder b1 / batched: the ONNX encoder on pre-cut crops, one image per call / 8 images per call
* end-to-end b1 / batched: ``Attributor.attribute_paths`` (decode, crops, encoder, detect,
  retrieve, verdict) with 1 / 8 images per encoder call, over the bundled store
* authors e2e: decode, bicubic resize to 256×256, fingerprint, torchvision ResNet-50 with the
  max-pool removed (exported to ONNX once, cached under runs/bench/), batched 8
* matmul peak: numpy float32 GEMM GFLOP/s on this machine with the same thread count; the
  encoder's achieved GFLOP/s (FLOPs counted from its ONNX graph) is compared with it.

Needs the ``train`` extra only for the authors' configuration (torch to export it once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "runs" / "bench"


def make_images(folder: Path, n: int, size: int = 512) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        base = np.stack([(xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1) + 40 * c) % 256 for c in range(3)], -1)
        px = (base.astype(np.uint8) & 0xF8) | rng.integers(0, 8, (size, size, 3), dtype=np.uint8)
        p = folder / f"bench-{i:04d}.png"
        Image.fromarray(px).save(p, compress_level=1)
        paths.append(p)
    return paths


def authors_model(threads: int) -> Path:
    """torchvision ResNet-50, max-pool removed, on 256×256 scaled fingerprints, as ONNX."""
    out = CACHE / "authors-resnet50-nomaxpool-256.onnx"
    if out.exists():
        return out
    import torch
    import torchvision

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    net = torchvision.models.resnet50(weights=None)
    net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    net.eval()
    x = torch.zeros(1, 3, 256, 256)
    axes = {"x": {0: "n"}, "y": {0: "n"}}
    torch.onnx.export(
        net, (x,), str(out), input_names=["x"], output_names=["y"], dynamic_axes=axes, opset_version=18, dynamo=False
    )
    return out


def conv_flops(model_path: Path, crop: int) -> float:
    """Multiply-adds ×2 of every Conv/Gemm/MatMul for one input crop, from ONNX shape inference."""
    import onnx
    from onnx import shape_inference

    m = onnx.load(str(model_path))
    for inp in m.graph.input:  # the crops [N, 3, H, W]; other inputs (a feature stage's counts) keep their shapes
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[0].dim_value = 1
            if not dims[2].dim_value:
                dims[2].dim_value = dims[3].dim_value = crop
    try:
        m = shape_inference.infer_shapes(m)
    except shape_inference.InferenceError:  # no shapes, no count: the table says so
        return 0.0
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    flops = 0.0
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = inits.get(node.input[1])
            out = shapes.get(node.output[0])
            if w and out:
                flops += 2.0 * np.prod(out) * np.prod(w[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            w = inits.get(node.input[1])
            out = shapes.get(node.output[0])
            if w and out:
                flops += 2.0 * np.prod(out) * w[0 if node.op_type == "MatMul" else -1]
    return flops


# -- the measurements, each run in a child process --------------------------------------------
def child(kind: str, args: argparse.Namespace) -> dict:
    from lida_plugin.decode import decode_file
    from lida_plugin.fingerprint import fingerprint

    paths = sorted(Path(args.folder).glob("*.png"))
    if kind == "matmul":
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
        a @ a
        t = time.perf_counter()
        reps = 5
        for _ in range(reps):
            a @ a
        dt = time.perf_counter() - t
        return {"gflops": 2 * 2048**3 * reps / dt / 1e9}
    if kind == "authors":
        import onnxruntime as ort
        from PIL import Image

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(authors_model(args.threads)), opts, providers=["CPUExecutionProvider"])
        sess.run(None, {"x": np.zeros((1, 3, 256, 256), np.float32)})
        t = time.perf_counter()
        for i in range(0, len(paths), 8):
            batch = []
            for p in paths[i : i + 8]:
                d = decode_file(p)
                small = np.asarray(Image.fromarray(d.pixels).resize((256, 256), Image.BICUBIC))
                batch.append(fingerprint(small, "scaled").transpose(2, 0, 1).astype(np.float32) / 255.0)
            sess.run(None, {"x": np.stack(batch)})
        return {"images_per_s": len(paths) / (time.perf_counter() - t)}

    from lida_plugin.attribute import Attributor
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import open_stack

    enc = Encoder(args.model, device="cpu", threads=args.threads, batch_size=256)
    if kind == "fingerprint":
        t = time.perf_counter()
        for p in paths:
            crops = enc.crops_for(decode_file(p))
            fingerprint(crops, enc.info.fingerprint_mode)
        return {"images_per_s": len(paths) / (time.perf_counter() - t)}
    if kind.startswith("encoder"):
        crop_sets = [enc.crops_for(decode_file(p)) for p in paths]
        per_call = 1 if kind == "encoder-b1" else 8
        enc.embed_crop_sets(crop_sets[:per_call])
        t = time.perf_counter()
        for i in range(0, len(crop_sets), per_call):
            enc.embed_crop_sets(crop_sets[i : i + per_call])
        dt = time.perf_counter() - t
        crops = sum(len(c) for c in crop_sets)
        return {"images_per_s": len(paths) / dt, "crops_per_s": crops / dt, "crops_per_image": crops / len(paths)}
    if kind.startswith("e2e"):
        stack = open_stack(enc, args.store)
        att = Attributor(enc, stack, images_per_batch=1 if kind == "e2e-b1" else 8)
        list(att.attribute_paths(paths[:2]))
        t = time.perf_counter()
        res = list(att.attribute_paths(paths))
        dt = time.perf_counter() - t
        assert all(r.ok for r in res), [r.error for r in res if not r.ok]
        return {"images_per_s": len(paths) / dt, "exemplars": len(stack.exemplars)}
    raise ValueError(kind)


def measure(kind: str, args: argparse.Namespace, model: str | None = None, store: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--folder", args.folder, "--threads", str(args.threads)]
    if model:
        cmd += ["--model", model]
    if store:
        cmd += ["--store", store]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="encoder (default: the bundled model)")
    ap.add_argument("--store", help="store of the end-to-end rows (default: the user store over the bundled one)")
    ap.add_argument("--compare-model", metavar="PATH", help="a second encoder, measured in the same run")
    ap.add_argument(
        "--compare-store",
        metavar="PATH",
        help="the store the second encoder's end-to-end rows retrieve over (the bundled store only serves the bundled "
        "model; without this a different model retrieves over the user store alone)",
    )
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    if args.child:
        out = child(args.child, args)
        out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    from lida_plugin.encoder import Encoder

    for flag, path in (("--model", args.model), ("--store", args.store), ("--compare-model", args.compare_model),
                       ("--compare-store", args.compare_store)):  # fmt: skip
        if path and not Path(path).is_file():
            ap.error(f"{flag} {path}: no such file")
    enc = Encoder(args.model, device="cpu", threads=args.threads)
    other = Encoder(args.compare_model, device="cpu", threads=args.threads) if args.compare_model else None
    model_rows = ("fingerprint", "encoder-b1", "encoder-batched", "e2e-b1", "e2e-batched")
    rows: dict[str, dict] = {}
    cmp_rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.folder = tmp
        make_images(Path(tmp), args.images)
        rows["matmul"] = measure("matmul", args)
        for k in model_rows:
            rows[k] = measure(k, args, args.model, args.store)
            if other is not None:
                cmp_rows[k] = measure(k, args, args.compare_model, args.compare_store)
        rows["authors"] = measure("authors", args)
    peak = rows["matmul"]["gflops"]
    authors_flops = conv_flops(authors_model(args.threads), 256)
    print(f"{args.images} PNGs 512×512; {args.threads} threads; {os.cpu_count()} cores\n")
    achieved = print_table(enc, rows, peak, args)
    print(f"| authors | {rows['authors']['images_per_s']:.2f} | {rows['authors']['max_rss_mb']:.0f} | "
          f"{authors_flops / 1e9:.2f} GFLOP/image |")  # fmt: skip
    print(f"| matmul peak | {peak:.1f} GFLOP/s | {rows['matmul']['max_rss_mb']:.0f} | numpy float32 2048² GEMM |")
    ratio = rows["e2e-batched"]["images_per_s"] / rows["authors"]["images_per_s"]
    print(f"\nend-to-end speed-up over the authors' configuration (batched vs batched): {ratio:.1f}× (target ≥ 5×)")
    if achieved:
        print(f"encoder efficiency: {100 * achieved / peak:.0f}% of the measured matmul peak (target ≥ 70%)")
    out = {"model": enc.model_id, "rows": rows, "speedup": ratio, "encoder_gflops": achieved, "peak_gflops": peak}
    if other is not None:
        print()
        print_table(other, cmp_rows, peak, args)
        ratios = {k: rows[k]["images_per_s"] / cmp_rows[k]["images_per_s"] for k in model_rows}
        print(f"\n{enc.model_id} images/s ÷ {other.model_id} images/s, same run:")
        print("| row | ratio |\n|---|---:|")
        for k, v in ratios.items():
            print(f"| {k} | {v:.2f} |")
        out["compare"] = {"model": other.model_id, "rows": cmp_rows, "ratio_images_per_s": ratios}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


def print_table(enc, rows: dict, peak: float, args: argparse.Namespace) -> float:
    """Print one model's rows; returns its encoder's achieved GFLOP/s (batched)."""
    flops_img = conv_flops(enc.path, enc.info.crop_size) * rows["encoder-batched"]["crops_per_image"]
    achieved = flops_img * rows["encoder-batched"]["images_per_s"] / 1e9
    print(f"model {enc.model_id} ({enc.info.architecture}, {enc.info.crop_count}×{enc.info.crop_size}² crops)\n")
    print("| row | images/s | peak RSS MB | notes |")
    print("|---|---:|---:|---|")
    for k in ("fingerprint", "encoder-b1", "encoder-batched", "e2e-b1", "e2e-batched"):
        r = rows[k]
        note = ""
        if k == "encoder-batched" and flops_img:
            pct = 100 * achieved / peak
            note = f"{flops_img / 1e9:.2f} GFLOP/image, {achieved:.1f} GFLOP/s = {pct:.0f}% of matmul peak"
        elif k == "encoder-batched":
            note = "no FLOP count (the counter sees only Conv/Gemm/MatMul with inferred shapes)"
        if k.startswith("e2e"):
            note = f"{r['exemplars']} exemplars in the store"
        print(f"| {k} | {r['images_per_s']:.2f} | {r['max_rss_mb']:.0f} | {note} |")
    return achieved


if __name__ == "__main__":
    main()
