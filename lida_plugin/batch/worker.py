"""What every engine's worker does: build one :class:`~lida_plugin.attribute.Attributor` (one
ONNX Runtime session) from a picklable :class:`JobConfig`, read an asset (local or through a
filesystem) and hand it to :meth:`Attributor.prepare`, then :meth:`Attributor.finish` a batch."""

from __future__ import annotations

import copy
import os
import pickle
from dataclasses import dataclass

import numpy as np

from ..attribute import Attributor, Prepared, Result, error_result
from ..errors import InputError
from .sources import read_asset


@dataclass(frozen=True)
class JobConfig:
    """Everything a worker needs to attribute the same way the driver would (picklable)."""

    model: str | None = None
    device: str = "cpu"
    threads: int = 1
    batch_size: int = 64
    store: str | None = None
    use_default_store: bool = True
    top_k: int = 5
    force: bool = False
    decode_threads: int = 1


def limit_threads(threads: int) -> None:
    """Keep numpy/BLAS to ``threads`` in a worker (ORT gets ``threads`` through its session options)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(max(1, threads)))


def build_attributor(cfg: JobConfig, *, with_store: bool = True) -> Attributor:
    """One encoder session and the store stack; ``with_store=False`` for a decode-only stage
    (its error records get the store id from the stage that finishes them)."""
    from ..encoder import Encoder
    from ..store import StoreStack, open_stack

    # a decode-only stage hands its items on packed, without the feature stage's counts (pack): no counting there
    enc = Encoder(cfg.model, device=cfg.device, threads=cfg.threads or None, batch_size=cfg.batch_size,
                  feature_stage=with_store)  # fmt: skip
    stack = open_stack(enc, cfg.store, use_default=cfg.use_default_store) if with_store else StoreStack([], enc)
    return Attributor(enc, stack, top_k=cfg.top_k, force=cfg.force)


def prepare_one(att: Attributor, path: str) -> Prepared | Result:
    """Read ``path`` (through its filesystem when it is a URI) and :meth:`Attributor.prepare` it;
    never raises for a bad asset."""
    try:
        data = read_asset(path)
    except InputError as exc:
        return error_result(path, exc.reason, att.model_id, att.store_id)
    return att.prepare(path, data)


def died_record(path: str, who: str, times: int) -> dict:
    """The error record of an asset that killed the process attributing it ``times`` times, alone."""
    return error_result(
        path,
        f"the {who} died {times} times while attributing this file alone"
        " (killed, out of memory, or a crash in a decoder or the encoder)",
    ).to_dict()


# -- moving prepared assets between processes (Ray stages) ----------------------------------
def pack(item: Prepared | Result) -> bytes:
    """Pickle what :meth:`Attributor.prepare` returned without the (zero-stride) pixel placeholder,
    which pickle would otherwise expand to a full image of zeros, nor the feature stage's inputs;
    every other field travels."""
    if isinstance(item, Result):
        return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    light = copy.copy(item)
    light.decoded = copy.copy(item.decoded)
    shape = light.decoded.pixels.shape
    light.decoded.pixels = None
    light.stage_inputs = None  # derived from the crops, 2x their size: the receiving encoder redoes it if it needs it
    return pickle.dumps((light, shape), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes) -> Prepared | Result:
    obj = pickle.loads(blob)
    if isinstance(obj, Result):
        return obj
    item, shape = obj
    item.decoded.pixels = np.broadcast_to(np.zeros((), np.uint8), shape)
    return item
