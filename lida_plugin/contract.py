"""The model contract: the one place that says what an encoder ONNX file must look like.

Training (``exporters/``) writes models to this contract and the runtime (``lida_plugin``)
refuses models that break it. ``docs/model-contract.md`` is the prose version of this module;
keep the two in step.

Graph
-----
* one input named :data:`INPUT_NAME`: ``uint8``, shape ``[N, 3, S, S]`` (``N`` dynamic, ``S`` the
  crop size in the metadata): raw 8-bit RGB crops cut from the full-resolution image, never
  resampled; except for a model that declares ``lida.input_resize = R`` (the authors'
  configuration, an evaluation baseline): the runtime first resizes the whole image to ``R×R``
  (:func:`lida_plugin.fingerprint.resize_square`) and cuts the crops from that.
* the graph itself applies the low-bit fingerprint (``BitwiseAnd(x, 7)``, then the mode) and
  the normalisation, so training and serving cannot drift. Feeding ``x & 7`` instead of ``x``
  gives the same result, which is what lets a store re-embed from the low-bit crops it keeps.
* one output named :data:`OUTPUT_NAME`: ``float32``, shape ``[N, D]``, each row L2-normalised.
  An image's embedding is the L2-normalised mean of its crops' embeddings.

Metadata
--------
String ``metadata_props`` with the keys in :data:`REQUIRED_KEYS` (and optionally
:data:`OPTIONAL_KEYS`); :func:`parse_metadata` turns them into a :class:`ModelInfo`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

CONTRACT_VERSION = "1"
INPUT_NAME = "crops"
OUTPUT_NAME = "embedding"

#: Fingerprint modes a model may declare. ``scaled`` is the authors' code (``(x & 7) * 36``),
#: ``binary`` the paper's formula (``255 * (x & 7 != 0)``), ``rgb`` a baseline with no
#: fingerprint at all (the full pixel value).
FINGERPRINT_MODES = ("scaled", "binary", "rgb")

K_CONTRACT = "lida.contract_version"
K_MODEL_ID = "lida.model_id"
K_ARCH = "lida.architecture"
K_MODE = "lida.fingerprint_mode"
K_CROP_SIZE = "lida.crop_size"
K_CROP_COUNT = "lida.crop_count"
K_CROP_ALIGN = "lida.crop_align"
K_MIN_SIZE = "lida.min_image_size"
K_NORM = "lida.normalization"
K_DIM = "lida.embedding_dim"
K_PROTO = "lida.real_prototype"
K_TAU = "lida.detection_temperature"
K_DET_T = "lida.detection_threshold"
K_DET_FPR = "lida.detection_fpr"
K_OPEN_T = "lida.open_set_threshold"
K_RECIPE = "lida.recipe_hash"
K_TRAINING = "lida.training"
K_RESIZE = "lida.input_resize"

REQUIRED_KEYS = (
    K_CONTRACT,
    K_MODEL_ID,
    K_ARCH,
    K_MODE,
    K_CROP_SIZE,
    K_CROP_COUNT,
    K_CROP_ALIGN,
    K_MIN_SIZE,
    K_NORM,
    K_DIM,
    K_PROTO,
    K_TAU,
    K_DET_T,
    K_DET_FPR,
    K_OPEN_T,
)
OPTIONAL_KEYS = (K_RECIPE, K_TRAINING, K_RESIZE)


class ContractError(ValueError):
    """A model file does not follow the model contract."""


@dataclass(frozen=True)
class ModelInfo:
    """Everything the runtime needs to know about an encoder, read from its metadata."""

    model_id: str
    architecture: str
    fingerprint_mode: str
    crop_size: int
    crop_count: int
    crop_align: int
    min_image_size: int
    normalization: dict[str, Any]
    embedding_dim: int
    real_prototype: tuple[float, ...]
    detection_temperature: float
    detection_threshold: float
    detection_fpr: float
    open_set_threshold: float
    recipe_hash: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    input_resize: int = 0  # 0: native grid (the default); R: resize the image to R x R first

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` an exporter writes for this model."""
        meta = {
            K_CONTRACT: CONTRACT_VERSION,
            K_MODEL_ID: self.model_id,
            K_ARCH: self.architecture,
            K_MODE: self.fingerprint_mode,
            K_CROP_SIZE: str(self.crop_size),
            K_CROP_COUNT: str(self.crop_count),
            K_CROP_ALIGN: str(self.crop_align),
            K_MIN_SIZE: str(self.min_image_size),
            K_NORM: json.dumps(self.normalization, sort_keys=True),
            K_DIM: str(self.embedding_dim),
            K_PROTO: json.dumps([round(float(v), 7) for v in self.real_prototype]),
            K_TAU: repr(float(self.detection_temperature)),
            K_DET_T: repr(float(self.detection_threshold)),
            K_DET_FPR: repr(float(self.detection_fpr)),
            K_OPEN_T: repr(float(self.open_set_threshold)),
        }
        if self.recipe_hash:
            meta[K_RECIPE] = self.recipe_hash
        if self.training:
            meta[K_TRAINING] = json.dumps(self.training, sort_keys=True)
        if self.input_resize:
            meta[K_RESIZE] = str(self.input_resize)
        return meta

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["real_prototype"] = list(self.real_prototype)
        return d


def parse_metadata(meta: Mapping[str, str], source: str = "model") -> ModelInfo:
    """Validate ``metadata_props`` against the contract and return a :class:`ModelInfo`.

    Raises :class:`ContractError` naming ``source`` and every problem found.
    """
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ContractError(f"{source}: not a lida encoder, metadata keys missing: {', '.join(missing)}")
    if meta[K_CONTRACT] != CONTRACT_VERSION:
        raise ContractError(
            f"{source}: model contract version {meta[K_CONTRACT]!r}, this runtime reads {CONTRACT_VERSION!r}"
        )
    try:
        info = ModelInfo(
            model_id=meta[K_MODEL_ID],
            architecture=meta[K_ARCH],
            fingerprint_mode=meta[K_MODE],
            crop_size=int(meta[K_CROP_SIZE]),
            crop_count=int(meta[K_CROP_COUNT]),
            crop_align=int(meta[K_CROP_ALIGN]),
            min_image_size=int(meta[K_MIN_SIZE]),
            normalization=json.loads(meta[K_NORM]),
            embedding_dim=int(meta[K_DIM]),
            real_prototype=tuple(float(v) for v in json.loads(meta[K_PROTO])),
            detection_temperature=float(meta[K_TAU]),
            detection_threshold=float(meta[K_DET_T]),
            detection_fpr=float(meta[K_DET_FPR]),
            open_set_threshold=float(meta[K_OPEN_T]),
            recipe_hash=meta.get(K_RECIPE, ""),
            training=json.loads(meta[K_TRAINING]) if meta.get(K_TRAINING) else {},
            input_resize=int(meta.get(K_RESIZE) or 0),
        )
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ContractError(f"{source}: malformed lida metadata: {exc}") from exc
    problems = []
    if info.fingerprint_mode not in FINGERPRINT_MODES:
        problems.append(f"fingerprint mode {info.fingerprint_mode!r} not one of {FINGERPRINT_MODES}")
    if info.crop_size < 8 or info.crop_count < 1 or info.crop_align < 1:
        problems.append("crop size must be >= 8, crop count and alignment >= 1")
    if info.min_image_size < info.crop_size and not info.input_resize:
        problems.append("min_image_size is smaller than crop_size")
    if info.input_resize and info.input_resize < info.crop_size:
        problems.append("input_resize is smaller than crop_size")
    if len(info.real_prototype) != info.embedding_dim:
        problems.append(f"real prototype has {len(info.real_prototype)} values, embedding_dim is {info.embedding_dim}")
    if info.detection_temperature <= 0:
        problems.append("detection temperature must be > 0")
    if not 0.0 <= info.detection_threshold <= 1.0:
        problems.append("detection threshold must be an ai_score in [0, 1]")
    if not -1.0 <= info.open_set_threshold <= 1.0:
        problems.append("open-set threshold must be a cosine similarity in [-1, 1]")
    if problems:
        raise ContractError(f"{source}: " + "; ".join(problems))
    return info


def ai_score(similarity_to_real: float | Any, temperature: float) -> float | Any:
    """Detection score: ``1 - sigmoid(sim(x, p_real) / tau) = sigmoid(-sim / tau)``.

    This is the probability of "generated" under the detection loss ``L_D`` the model was
    adapted with; numpy arrays are accepted too.
    """
    import numpy as np

    return 1.0 / (1.0 + np.exp(np.asarray(similarity_to_real, dtype=np.float64) / temperature))
