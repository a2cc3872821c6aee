#!/usr/bin/env python
"""What `lida attribute` says about held-out images with light noise added: the evader's cheapest trick on a
generated image, and what a dithered 16-to-8-bit export does to a real photo.

    python benchmarks/noise_photos.py [--data ../shared/data] [--model PATH]

Needs the `train` extra (the versions are `lida_exporters.probes.noise_eval_ops`). Every held-out image of the
corpus (ldm-sr capped at 5 faces per checkpoint) goes through the whole runtime (no store: detection only) as its
PNG and as noised copies: Gaussian noise independent per channel at sd 0.5-3, the same noise on all three
channels, and a dithered export (triangular dither of +-1 grey level). Prints, per class and version, the verdicts
of `lida attribute` and of `lida attribute --force` (the model alone: what the runtime said before the noise gate
of `lida_plugin.noisegate`). Numbers in docs/evaluation.md, "Light noise".
"""

from __future__ import annotations

from _corpus import held_out_pixels, parse_args

from lida_exporters.probes import noise_eval_ops
from lida_plugin.attribute import Attributor
from lida_plugin.encoder import Encoder
from lida_plugin.lossy import png_bytes
from lida_plugin.store import open_stack


def main() -> None:
    args = parse_args(__doc__)
    enc = Encoder(args.model)
    runs = {f: Attributor(enc, open_stack(enc, None, use_default=False), force=f) for f in (False, True)}
    ops = noise_eval_ops()
    out: dict[tuple[str, str, bool], list[str]] = {}
    for e, px in held_out_pixels(args.data):
        data = [(op.name, png_bytes(op.apply(px))) for op in ops]
        for forced, att in runs.items():
            results = att.finish([att.prepare(f"{e.relpath}[{name}]", b) for name, b in data])
            for (name, _), r in zip(data, results, strict=True):
                if r.ok:
                    out.setdefault((e.kind, name, forced), []).append(r.verdict)
    print(f"model `{enc.info.model_id}`\n")
    print("| class | version | images | `lida attribute`: ai-generated / inconclusive / real |"
          " `--force` (the model alone): ai-generated / real |\n|---|---|---|---|---|")  # fmt: skip
    for kind in ("real", "generated"):
        for op in ops:
            v, f = out.get((kind, op.name, False), []), out.get((kind, op.name, True), [])
            if not v:
                continue
            shares = " / ".join(f"{v.count(x) / len(v):.1%}" for x in ("ai-generated", "inconclusive", "real"))
            forced = " / ".join(f"{f.count(x) / len(f):.1%}" for x in ("ai-generated", "real"))
            print(f"| {kind} | {op.name} | {len(v)} | {shares} | {forced} |")


if __name__ == "__main__":
    main()
