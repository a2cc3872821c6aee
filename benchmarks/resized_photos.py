#!/usr/bin/env python
"""What `lida attribute` says about downscaled images: real photos resized and saved as PNG are real.

    python benchmarks/resized_photos.py [--data ../shared/data] [--model PATH]

Every held-out image of the corpus (ldm-sr capped at 5 faces per checkpoint) goes through the whole
runtime (no store: detection only) as its PNG and as copies resized 0.75x / 0.5x with Pillow's bicubic
and Lanczos filters, saved as PNG in memory. Prints, per class and version, the share called
`ai-generated` (a real photo so called is a false accusation) and `inconclusive` (no gate can see a
resize). Numbers in docs/evaluation.md, "Real photos downscaled".
"""

from __future__ import annotations

from _corpus import held_out_pixels, parse_args

from lida_plugin.attribute import Attributor
from lida_plugin.encoder import Encoder
from lida_plugin.lossy import png_bytes, resized
from lida_plugin.store import open_stack

VERSIONS = [("original", None, None)] + [(f"{f}x {m}", f, m) for f in (0.75, 0.5) for m in ("bicubic", "lanczos")]


def main() -> None:
    args = parse_args(__doc__)
    enc = Encoder(args.model)
    att = Attributor(enc, open_stack(enc, None, use_default=False))
    out: dict[tuple[str, str], list[str]] = {}
    for e, px in held_out_pixels(args.data):
        items = [att.prepare(f"{e.relpath}[{name}]", png_bytes(px if f is None else resized(px, f, m)))
                 for name, f, m in VERSIONS]  # fmt: skip
        for (name, _, _), r in zip(VERSIONS, att.finish(items), strict=True):
            if r.ok:
                out.setdefault((e.kind, name), []).append(r.verdict)
    print(f"model `{enc.info.model_id}`\n")
    print("| class | version | images | `ai-generated` | `inconclusive` |\n|---|---|---|---|---|")
    for (kind, name), v in sorted(out.items()):
        ai, inc = v.count("ai-generated") / len(v), v.count("inconclusive") / len(v)
        print(f"| {kind} | {name} | {len(v)} | {ai:.1%} | {inc:.1%} |")


if __name__ == "__main__":
    main()
