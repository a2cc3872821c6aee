"""What the held-out-image benchmarks share: their ``--data``/``--model`` options and the images they read."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args(doc: str, more: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--data`` (default ../shared/data) and ``--model`` (default: the bundled encoder), plus ``more``'s."""
    p = argparse.ArgumentParser(description=doc.splitlines()[1])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", help="encoder ONNX (default: the bundled one)")
    if more is not None:
        more(p)
    return p.parse_args()


def held_out_pixels(data: str) -> Iterator[tuple[object, np.ndarray]]:
    """Every held-out image of the corpus (ldm-sr capped at 5 faces per checkpoint) with its pixels."""
    from lida_plugin.decode import decode_file
    from lida_plugin.evaluate.corpus import load_corpus
    from lida_plugin.evaluate.lossy import heldout_capped

    for e in heldout_capped(load_corpus(data)):
        yield e, decode_file(e.path).pixels


def runtime_verdicts(model: str | None, data: str, versions) -> tuple[str, dict[tuple[str, str, bool], list[str]]]:
    """Every held-out image's versions through the whole runtime (no store: detection only), plain and forced:
    ``(model id, {(kind, version, forced): verdicts})``. ``versions(entry, pixels)`` gives ``(name, file bytes)``s."""
    from lida_plugin.attribute import Attributor
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import open_stack

    enc = Encoder(model)
    runs = {f: Attributor(enc, open_stack(enc, None, use_default=False), force=f) for f in (False, True)}
    out: dict[tuple[str, str, bool], list[str]] = {}
    for e, px in held_out_pixels(data):
        files = versions(e, px)
        for forced, att in runs.items():
            results = att.finish([att.prepare(f"{e.relpath}[{name}]", b) for name, b in files])
            for (name, _), r in zip(files, results, strict=True):
                if r.ok:
                    out.setdefault((e.kind, name, forced), []).append(r.verdict)
    return enc.info.model_id, out


def print_verdicts(out: dict[tuple[str, str, bool], list[str]], names, forced_header: str) -> None:
    """:func:`runtime_verdicts`' shares as a Markdown table, per class and version (in ``names``' order)."""
    print(f"| class | version | images | `lida attribute`: ai-generated / inconclusive / real | {forced_header} |")
    print("|---|---|---|---|---|")
    for kind in ("real", "generated"):
        for name in names:
            v, f = out.get((kind, name, False), []), out.get((kind, name, True), [])
            if not v:
                continue
            shares = " / ".join(f"{v.count(x) / len(v):.1%}" for x in ("ai-generated", "inconclusive", "real"))
            forced = " / ".join(f"{f.count(x) / len(f):.1%}" for x in ("ai-generated", "real"))
            print(f"| {kind} | {name} | {len(v)} | {shares} | {forced} |")
