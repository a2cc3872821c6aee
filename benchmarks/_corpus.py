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
