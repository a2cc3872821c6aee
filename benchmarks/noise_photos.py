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

from _corpus import parse_args, print_verdicts, runtime_verdicts

from lida_exporters.probes import noise_eval_ops
from lida_plugin.lossy import png_bytes


def main() -> None:
    args = parse_args(__doc__)
    ops = noise_eval_ops()

    def versions(e, px):
        return [(o.name, png_bytes(o.apply(px))) for o in ops]

    model_id, out = runtime_verdicts(args.model, args.data, versions)
    print(f"model `{model_id}`\n")
    print_verdicts(out, [o.name for o in ops], "`--force` (the model alone): ai-generated / real")


if __name__ == "__main__":
    main()
