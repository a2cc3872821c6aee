"""The encoder session: an ONNX Runtime session over a model that follows the contract.

Providers: ``device="auto"`` takes TensorRT/CUDA when onnxruntime-gpu offers them (the ``gpu``
extra) and falls back to the CPU; ``"cpu"`` forces the CPU; ``"cuda"`` and ``"tensorrt"`` fail
loudly when the provider is missing. Threads: ``threads`` sets ORT's intra-op pool (``None``
lets ORT use every core, except for a model whose feature stage the runtime computes, which gets one
thread; the ``LIDA_THREADS`` environment variable sets it for the CLI).

Feature stage: a model that declares the ``spam-counts`` stage (``lida.counts_input``, see
:mod:`lida_plugin.contract`) gets its SPAM counts from :class:`lida_plugin.residual.CropCounter` on the
CPU instead of histogramming the crops in the graph: the same embedding, about half the time per crop
(docs/benchmarks.md). On a GPU the graph counts (its scatter runs there). ``LIDA_COUNTS=graph`` makes the
CPU do it the graph's way too, as does ``Encoder(..., feature_stage=False)`` (for comparisons).
"""

from __future__ import annotations

import logging
import os
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from .contract import INPUT_NAME, OUTPUT_NAME, ContractError, ModelInfo, counts_stage, parse_metadata
from .cores import DEVICES, check_parallel, counts_setting
from .decode import Decoded
from .errors import ModelError
from .files import file_sha256
from .fingerprint import extract_crops, require_size, resize_square
from .residual import CropCounter

log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    """Where the wheel's default encoder lives (it may be absent in a source checkout)."""
    return Path(str(resources.files("lida_plugin") / "data" / "encoder.onnx"))


def resolve_model_path(model: str | os.PathLike[str] | None = None) -> Path:
    """``model`` if given, else ``$LIDA_MODEL``, else the bundled default; must exist."""
    if model:
        path, origin = Path(model), "--model"
    elif os.environ.get("LIDA_MODEL"):
        path, origin = Path(os.environ["LIDA_MODEL"]), "LIDA_MODEL"
    else:
        path, origin = bundled_model_path(), "bundled default"
    if path.is_dir():
        raise ModelError(f"encoder model {path} (from {origin}) is a folder, not an ONNX file")
    if not path.is_file():
        if origin == "bundled default":
            raise ModelError(
                f"no encoder model: the bundled default {path} is missing from this installation;"
                " pass --model PATH or set LIDA_MODEL (lida-plugin never runs without a trained model)"
            )
        raise ModelError(f"encoder model {path} (from {origin}) does not exist")
    return path


def choose_providers(device: str = "auto") -> list[str]:
    """The ONNX Runtime providers to ask for, best first."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = []
    if device == "tensorrt" and "TensorrtExecutionProvider" in available:
        wanted.append("TensorrtExecutionProvider")
    if "CUDAExecutionProvider" in available:
        wanted.append("CUDAExecutionProvider")
    if device in ("cuda", "tensorrt") and not wanted:
        raise ModelError(
            f"device {device!r} requested but onnxruntime offers only {available};"
            " install the gpu extra (onnxruntime-gpu) on a machine with CUDA"
        )
    return wanted + ["CPUExecutionProvider"]


class Encoder:
    """Embeds crops and images with an encoder model.

    >>> enc = Encoder()                      # bundled model, best device
    >>> enc.embed_image(decoded).shape       # (D,)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 64,
        feature_stage: bool = True,
    ) -> None:
        check_parallel(threads, "threads")
        self.path = resolve_model_path(model)
        self.batch_size = max(1, int(batch_size))
        providers = choose_providers(device)
        self.session = self._session(threads, providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info: ModelInfo = parse_metadata(meta, source=str(self.path))
        except ContractError as exc:
            raise ModelError(str(exc)) from None
        self._check_io()
        self.providers = self.session.get_providers()
        self.sha256 = file_sha256(self.path)
        self.real_prototype = np.asarray(self.info.real_prototype, dtype=np.float32)
        self.counts_input = self._counts_input() if feature_stage else None
        if self.counts_input is not None and not threads:
            # what is left of the graph after the counts is small: a pool of ORT threads costs more than it
            # gives (its spinning takes the cores from the decode threads); one thread, unless asked otherwise
            self.session = self._session(1, providers)
        self.threads = threads or (1 if self.counts_input is not None else None)
        self._counters = threading.local()  # a CropCounter keeps work arrays: one per thread
        log.debug("encoder %s on %s (counts: %s)", self.info.model_id, self.providers, self.counts_input or "graph")

    def _session(self, threads: int | None, providers: list[str]):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime cannot load it: {exc}") from None

    def _check_io(self) -> None:
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or ins[0].name != INPUT_NAME or ins[0].type != "tensor(uint8)":
            raise ModelError(
                f"{self.path}: expected one uint8 input named {INPUT_NAME!r}, found {[(i.name, i.type) for i in ins]}"
            )
        if not outs or outs[0].name != OUTPUT_NAME:
            raise ModelError(f"{self.path}: expected an output named {OUTPUT_NAME!r}, found {[o.name for o in outs]}")
        shape = ins[0].shape
        s = self.info.crop_size
        if len(shape) != 4 or shape[1] != 3 or (isinstance(shape[2], int) and shape[2] != s):
            raise ModelError(f"{self.path}: input shape {shape} does not match [N, 3, {s}, {s}]")

    def _counts_input(self) -> dict | None:
        """The feature stage this encoder computes itself (``None``: the graph gets crops)."""
        try:
            how = counts_setting()
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        stage = counts_stage(self.info)
        if stage is None or self.on_gpu or how == "graph":
            return None
        if stage["input"] not in {i.name for i in self.session.get_overridable_initializers()}:
            log.warning("%s declares the input %r, which its graph lacks; counting in the graph", self.path, stage)
            return None
        return stage

    def stage_inputs(self, crops: np.ndarray) -> np.ndarray | None:
        """What the feature stage makes of ``crops`` (the SPAM counts), computed now, in this thread, or
        ``None`` when the graph takes the crops themselves. :meth:`Attributor.prepare` calls it, so the
        counting runs in the decode threads, next to the decoding, not in the thread that runs the
        encoder; :meth:`embed_crops` takes the result back."""
        stage = self.counts_input
        if stage is None:
            return None
        counter = getattr(self._counters, "counter", None)
        if counter is None:
            counter = self._counters.counter = CropCounter(stage["T"], stage["colour"])
        return counter.counts(crops)

    def _run(self, batch: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
        stage = self.counts_input
        if stage is None:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        feed = {INPUT_NAME: batch[:0], stage["input"]: self.stage_inputs(batch) if counts is None else counts}
        return self.session.run([OUTPUT_NAME], feed)[0]

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] != "CPUExecutionProvider"

    def crops_for(self, decoded: Decoded) -> np.ndarray:
        """The model's crop grid over a decoded image: ``uint8 [K, 3, S, S]``."""
        i = self.info
        px = decoded.pixels
        if i.input_resize:  # the size floor applies to the image as given, before it is resized
            require_size(px, i.min_image_size, decoded.path)
            px = resize_square(px, i.input_resize)
        return extract_crops(px, i.crop_size, i.crop_count, i.crop_align, i.min_image_size, decoded.path)

    def embed_crops(self, crops: np.ndarray, stage_inputs: np.ndarray | None = None) -> np.ndarray:
        """Per-crop embeddings ``float32 [N, D]`` (rows unit length), run in batches; ``stage_inputs``:
        :meth:`stage_inputs` of these crops when the caller computed them already."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        if crops.ndim != 4 or crops.shape[1:] != (3, self.info.crop_size, self.info.crop_size):
            raise ValueError(f"crops must be [N, 3, {self.info.crop_size}, {self.info.crop_size}], got {crops.shape}")
        if stage_inputs is not None and self.counts_input is None:
            stage_inputs = None  # made by an encoder that computes the stage (another process); this one does not
        if stage_inputs is not None and len(stage_inputs) != len(crops):
            raise ValueError(f"stage_inputs for {len(stage_inputs)} crops, given {len(crops)} crops")
        out = np.empty((len(crops), self.info.embedding_dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            stop = start + self.batch_size
            counts = None if stage_inputs is None else stage_inputs[start:stop]
            out[start : start + len(crops[start:stop])] = self._run(crops[start:stop], counts)
        return out

    def embed_crop_sets(self, crop_sets: list[np.ndarray], stage_inputs: list | None = None) -> np.ndarray:
        """One embedding per image from each image's crops, in one batched pass: ``[M, D]``;
        ``stage_inputs``: each set's :meth:`stage_inputs` (all or none), when already computed."""
        if not crop_sets:
            return np.zeros((0, self.info.embedding_dim), dtype=np.float32)
        given = None
        if stage_inputs is not None and all(x is not None for x in stage_inputs):
            given = np.concatenate(stage_inputs)
        per_crop = self.embed_crops(np.concatenate(crop_sets), given)
        bounds = np.cumsum([0] + [len(c) for c in crop_sets])
        means = np.stack([per_crop[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        return normalize(means)

    def embed_image(self, decoded: Decoded) -> np.ndarray:
        return self.embed_crop_sets([self.crops_for(decoded)])[0]


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)
