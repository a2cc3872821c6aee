#!/usr/bin/env python
"""Cost of the declared-provenance readers (lida_plugin/evidence) per 512×512 file, readers off vs on.

Prints a Markdown table. For each kind of file (made by the script; the C2PA one is signed with
throw-away keys from ``lida keys init``), the median over ``--repeats`` runs of:

* off: ``decode_file`` (what ``lida attribute`` does per file before the encoder, readers off)
* on: ``decode_file`` + ``read_evidence`` (the file read again and hashed against the decode, its
  metadata parsed, C2PA validated when a manifest is there) + ``apply_evidence``
* readers alone: the second part, i.e. what the readers add to one ``lida attribute`` call (timed in
  the same iteration as the decode), as wall-clock time and as this thread's CPU time (the latter is
  what the readers cost without the waits of a shared machine; c2pa-rs runs native code in the
  calling thread)

    python benchmarks/metadata_readers.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def make_files(d: Path) -> dict[str, Path]:
    import numpy as np
    from evidence_fixtures import A1111_PARAMS, COMFY_PROMPT, COMFY_WORKFLOW, XMP_AI
    from PIL import Image, PngImagePlugin

    from lida_plugin.keys import init_keys, load_signing_config
    from lida_plugin.manifest import ManifestWriter

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    out = {}
    img.save(out.setdefault("PNG, no metadata", d / "plain.png"))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_PARAMS)
    img.save(out.setdefault("PNG, A1111 parameters", d / "a1111.png"), pnginfo=info)
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(COMFY_PROMPT))
    info.add_text("workflow", json.dumps(COMFY_WORKFLOW))
    img.save(out.setdefault("PNG, ComfyUI prompt+workflow", d / "comfy.png"), pnginfo=info)
    img.save(out.setdefault("JPEG q90, no metadata", d / "plain.jpg"), quality=90)
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x0131] = "Canon", "Canon EOS R5", "Firmware 1.8.1"
    xmp = XMP_AI.format(dst="digitalCapture", tool="Adobe Lightroom").encode()
    img.save(out.setdefault("JPEG q90, EXIF camera + XMP", d / "camera.jpg"), quality=90, exif=ex.tobytes(), xmp=xmp)
    config = load_signing_config(init_keys(d / "keys"))
    rec = {
        "path": str(d / "plain.png"),
        "status": "ok",
        "verdict": "real",
        "generator": None,
        "family": None,
        "score": 0.9,
        "reason": "bench",
        "detection": {"ai_score": 0.1, "threshold": 0.5},
        "neighbors": [],
        "reliability": {"reliable": True, "forced": False, "reasons": []},
        "image": {"format": "PNG"},
        "model_id": "bench",
        "store_id": "bench",
    }
    with ManifestWriter(config, mode="embed", out_dir=d / "signed") as w:
        assert w.apply(rec), rec["manifest"]
    out["PNG, embedded C2PA manifest"] = Path(rec["manifest"]["path"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    from lida_plugin.decode import decode_file
    from lida_plugin.evidence import apply_evidence, read_evidence

    rec = {
        "status": "ok",
        "verdict": "inconclusive",
        "generator": None,
        "family": None,
        "score": None,
        "reason": "bench",
        "detection": {"ai_score": 0.0, "threshold": 0.5},
        "reliability": {"reliable": False},
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp))
        for p in files.values():  # warm the page cache, the name table and c2pa
            apply_evidence(rec, read_evidence(p, decode_file(p)))
        print(
            "| file (512×512) | bytes | readers off: decode (ms) | readers on: decode + readers (ms) |"
            " readers alone, wall (ms) | readers alone, CPU (ms) | items |"
        )
        print("|---|---:|---:|---:|---:|---:|---|")
        med = statistics.median
        for kind, p in files.items():
            dec_ms, read_ms, tot_ms, cpu_ms = [], [], [], []
            for _ in range(args.repeats):  # both timed in the same iteration: load on the machine hits both alike
                t0 = time.perf_counter()
                dec = decode_file(p)
                t1, c1 = time.perf_counter(), time.thread_time()
                apply_evidence(rec, read_evidence(p, dec))
                t2, c2 = time.perf_counter(), time.thread_time()
                dec_ms.append((t1 - t0) * 1000)
                read_ms.append((t2 - t1) * 1000)
                tot_ms.append((t2 - t0) * 1000)
                cpu_ms.append((c2 - c1) * 1000)
            items = [f"{i['source']}:{i['claim']}" for i in read_evidence(p)]
            print(
                f"| {kind} | {p.stat().st_size} | {med(dec_ms):.2f} | {med(tot_ms):.2f} | {med(read_ms):.2f} |"
                f" {med(cpu_ms):.2f} | {', '.join(items) or '-'} |"
            )


if __name__ == "__main__":
    main()
