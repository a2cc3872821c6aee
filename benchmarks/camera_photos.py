#!/usr/bin/env python
"""What `lida attribute` says about camera originals: held-out images re-mosaicked through a Bayer filter and
demosaiced, as a camera does, saved as PNG.

    python benchmarks/camera_photos.py [--data ../shared/data] [--model PATH] [--jpeg QUALITY]

Needs the `train` extra (OpenCV's VNG and edge-aware demosaicing; `lida_exporters.camera`). Every held-out
image of the corpus (ldm-sr capped at 5 faces per checkpoint) goes through the whole runtime (no store:
detection only) as its PNG and as processed copies: demosaiced by four algorithms (a random CFA phase per
image, seeded), demosaiced then sharpened or noised, demosaiced then downscaled (which erases the traces),
and, without demosaicing, noised or sharpened (what an evader does to a generated image). Prints, per class
and version, the verdicts of `lida attribute` and of `lida attribute --force` (the model alone, which is
what the runtime said before the camera gate of `lida_plugin.cfa`). With `--jpeg Q` every version is saved
as a JPEG at quality Q (4:2:0) instead: what a camera usually writes (the JPEG gate answers first; `--force`
gives the lossy detector's verdict). Numbers in docs/evaluation.md, "Camera originals".
"""

from __future__ import annotations

import zlib

import numpy as np
from _corpus import parse_args, print_verdicts, runtime_verdicts

from lida_exporters.camera import demosaic, noisy, unsharp
from lida_plugin.lossy import jpeg_bytes, png_bytes, resized

VERSIONS = {
    "original": lambda p, ph: p,
    "demosaic bilinear": lambda p, ph: demosaic(p, "bilinear", ph),
    "demosaic MHC": lambda p, ph: demosaic(p, "mhc", ph),
    "demosaic VNG": lambda p, ph: demosaic(p, "vng", ph),
    "demosaic EA": lambda p, ph: demosaic(p, "ea", ph),
    "demosaic MHC + unsharp 0.8": lambda p, ph: unsharp(demosaic(p, "mhc", ph), 0.8, 1.0),
    "demosaic VNG + noise sd 1.5": lambda p, ph: noisy(demosaic(p, "vng", ph), 1.5, ph),
    "demosaic MHC, then 0.75x bicubic": lambda p, ph: resized(demosaic(p, "mhc", ph), 0.75, "bicubic"),
    "noise sd 2 (no demosaicing)": lambda p, ph: noisy(p, 2.0, ph),
    "unsharp 0.8 (no demosaicing)": lambda p, ph: unsharp(p, 0.8, 1.0),
}


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--jpeg", type=int, metavar="Q", help="save as JPEG at Q"))
    encode = (lambda px: jpeg_bytes(px, args.jpeg, 2)) if args.jpeg else png_bytes

    def versions(e, px):
        phase = zlib.crc32(e.relpath.encode()) % 4
        return [(name, encode(np.ascontiguousarray(fn(px, phase)))) for name, fn in VERSIONS.items()]

    model_id, out = runtime_verdicts(args.model, args.data, versions)
    print(f"model `{model_id}`" + (f", every version saved as JPEG q{args.jpeg}" if args.jpeg else "") + "\n")
    print_verdicts(out, VERSIONS, "`--force` (the model alone; for a JPEG the lossy detector): ai-generated / real")


if __name__ == "__main__":
    main()
