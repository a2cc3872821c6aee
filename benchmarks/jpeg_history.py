#!/usr/bin/env python
"""What `lida attribute` says about lossless files whose pixels were a JPEG: held-out images saved as JPEG and
back as PNG (a converted upload, an archive's format migration, a launderer's trick).

    python benchmarks/jpeg_history.py [--data ../shared/data] [--model PATH]

Every held-out image of the corpus (ldm-sr capped at 5 faces per checkpoint) goes through the whole runtime
(no store: detection only) as its PNG and as JPEG round trips (Pillow, 4:2:0 unless said) saved as PNG.
Prints, per class and version, the verdicts of `lida attribute` and of `lida attribute --force` (for a file
the JPEG-history gate of `lida_plugin.jpeghist` caught, the lossy detector's verdict; otherwise the model's),
and the verdicts before the gate (the model alone on every file). Numbers in docs/evaluation.md, "JPEG history".
"""

from __future__ import annotations

import numpy as np
from _corpus import held_out_pixels, parse_args

import lida_plugin.attribute as attribute
from lida_plugin.attribute import Attributor
from lida_plugin.decode import decode_bytes
from lida_plugin.encoder import Encoder
from lida_plugin.lossy import jpeg_bytes, png_bytes
from lida_plugin.store import open_stack

VERSIONS = [("original", None, 2)] + [(f"JPEG q{q}, then PNG", q, 2) for q in (75, 90, 95, 98)]
VERSIONS.append(("JPEG q90 4:4:4, then PNG", 90, 0))


def main() -> None:
    args = parse_args(__doc__)
    enc = Encoder(args.model)
    runs = {k: Attributor(enc, open_stack(enc, None, use_default=False), force=k != "plain")
            for k in ("plain", "forced", "model alone")}  # fmt: skip
    gate = attribute.jpeg_history_reasons
    out: dict[tuple[str, str, str], list[str]] = {}
    for e, px in held_out_pixels(args.data):
        data = [(name, png_bytes(px if q is None else np.ascontiguousarray(
            decode_bytes(jpeg_bytes(px, q, sub), name).pixels))) for name, q, sub in VERSIONS]  # fmt: skip
        for kind, att in runs.items():
            attribute.jpeg_history_reasons = (lambda crops: []) if kind == "model alone" else gate
            results = att.finish([att.prepare(f"{e.relpath}[{name}]", b) for name, b in data])
            for (name, _), r in zip(data, results, strict=True):
                if r.ok:
                    out.setdefault((e.kind, name, kind), []).append(r.verdict)
    attribute.jpeg_history_reasons = gate
    print(f"model `{enc.info.model_id}`\n")
    print(
        "| class | version | images | `lida attribute`: ai-generated / inconclusive / real |"
        " `--force`: ai-generated / real | before the gate: ai-generated / real |"
    )
    print("|---|---|---|---|---|---|")
    for kind in ("real", "generated"):
        for name, _, _ in VERSIONS:
            v = out.get((kind, name, "plain"), [])
            if not v:
                continue
            cells = [" / ".join(f"{v.count(x) / len(v):.1%}" for x in ("ai-generated", "inconclusive", "real"))]
            for k in ("forced", "model alone"):
                f = out[(kind, name, k)]
                cells.append(" / ".join(f"{f.count(x) / len(f):.1%}" for x in ("ai-generated", "real")))
            print(f"| {kind} | {name} | {len(v)} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
