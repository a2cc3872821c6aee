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
* a model that reads the full pixel value declares ``lida.input_bits = 8`` (:data:`K_BITS`; ``rgb``
  models implicitly): a store's low-bit crops cannot be re-embedded into it.

Detection
---------
A model may carry a learned detection head in ``lida.detection_head`` (:data:`K_DET_HEAD`,
contract version 2): ``{"kind": "logistic", "version": 1, "w": [D floats], "b": float}``, scored
by :func:`head_score` on the image embedding; version 2 adds a ``"noise"`` block, terms in the image's
colour noise floor (:func:`lida_plugin.noisegate.noise_score` of the crops the model reads; see
:func:`head_score`). Without a head the score is :func:`ai_score` of the cosine to the real prototype.
``lida_plugin.detect.ai_scores`` picks between them.

Decision
--------
``lida.open_set_threshold``: a generator is named only when its nearest exemplar's cosine similarity
reaches it. A model may carry ``lida.family_margin`` (:data:`K_FAMILY_M`, optional, read by any
contract version; a runtime that does not know it names no family alone, the safe side): below the
open-set threshold, the nearest generator's *family* is named, with no generator, when that
family's best similarity exceeds every other registered family's by at least the margin
(:func:`lida_plugin.attribute.verdict`).

Feature stage
-------------
A model may declare ``lida.counts_input`` (:data:`K_COUNTS`, optional, read by any contract version):
``{"kind": "spam-counts", "version": 1, "input": "spam_counts", "T": 3, "channels": 5}``. Its graph then
has a second, optional input of that name (an input with an empty initializer as its default, so
``InferenceSession.get_inputs()`` still lists only :data:`INPUT_NAME`): ``float32 [N, 4, C, (2T+1)^3]``,
the joint SPAM counts of the crops that :class:`lida_plugin.residual.CropCounter` computes (C = 5: R, G, B,
R - G, B - G; 3: R, G, B). Fed with counts, the graph uses them and ignores the crops (feed
``[0, 3, S, S]``); fed only crops, it histograms them itself: the same embedding either way (the numbers are
integers, exact in float32). The runtime feeds counts on the CPU, where numpy's ``bincount`` is several
times faster than ONNX Runtime's ``ScatterElements``; a runtime that does not know the kind or version
feeds crops, the safe side (:mod:`lida_plugin.encoder`).

Metadata
--------
String ``metadata_props`` with the keys in :data:`REQUIRED_KEYS` (and optionally
:data:`OPTIONAL_KEYS`); :func:`parse_metadata` turns them into a :class:`ModelInfo`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

CONTRACT_VERSION = "2"
#: Versions this runtime reads. A model writes ``"2"`` only when it carries a
#: :data:`K_DET_HEAD` (a runtime that reads only ``"1"`` would score it with the prototype and a
#: threshold that was calibrated for the head); every other model still writes ``"1"``.
SUPPORTED_VERSIONS = ("1", "2")
INPUT_NAME = "crops"
OUTPUT_NAME = "embedding"
#: the optional input of a model with the ``spam-counts`` feature stage (:data:`K_COUNTS`)
COUNTS_NAME = "spam_counts"

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
K_BITS = "lida.input_bits"
K_DET_HEAD = "lida.detection_head"
K_DET_CONF = "lida.detection_fpr_confidence"
K_FAMILY_M = "lida.family_margin"
K_COUNTS = "lida.counts_input"
#: feature stages a runtime can compute itself (kind -> versions): see "Feature stage" above
COUNT_STAGES = {"spam-counts": (1,)}

#: ``lida.input_bits``: how many low bit planes of each sample the graph reads. ``3``: only
#: ``x & 7`` (every low-bit fingerprint model; a store's low-bit crops can be re-embedded);
#: ``8``: the full value (``rgb`` baselines, residual-statistics models), so crops a store kept
#: as ``x & 7`` cannot be re-embedded and the originals must be registered again.
INPUT_BITS = (3, 8)
#: Detection heads a model may carry in ``lida.detection_head`` (kind -> versions read).
DETECTION_HEADS = {"logistic": (1, 2)}
#: The noise measures a version-2 head may read (``noise.score`` -> versions): ``colour-noise-floor`` v1 is
#: :func:`lida_plugin.noisegate.noise_score` of the crops the model reads.
NOISE_SCORES = {"colour-noise-floor": (1,)}

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
OPTIONAL_KEYS = (K_RECIPE, K_TRAINING, K_RESIZE, K_BITS, K_DET_HEAD, K_DET_CONF, K_FAMILY_M, K_COUNTS)


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
    input_bits: int = 0  # 3: the graph reads only x & 7; 8: the full value; 0: from the mode (rgb 8, else 3)
    detection_head: dict[str, Any] = field(default_factory=dict)  # {} : the prototype score
    # 0: the threshold is the point estimate of the FPR quantile; c > 0: the stated FPR holds with
    # confidence c (lida_plugin.detect.calibrate_threshold)
    detection_confidence: float = 0.0
    # None: a generator is named or not (the open-set threshold), never a family alone. m: when the
    # nearest generator is below the open-set threshold, its family is named (with no generator) if its
    # best similarity beats every other registered family's by at least m (lida_plugin.attribute.verdict)
    family_margin: float | None = None
    # {}: the graph takes crops only; else the spam-counts feature stage it also accepts (see "Feature stage")
    counts_input: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.input_bits:
            object.__setattr__(self, "input_bits", 8 if self.fingerprint_mode == "rgb" else 3)

    @property
    def contract_version(self) -> str:
        """The version this model's metadata needs (see :data:`SUPPORTED_VERSIONS`)."""
        return "2" if self.detection_head else "1"

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` an exporter writes for this model."""
        meta = {
            K_CONTRACT: self.contract_version,
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
        if self.input_bits != 3 or self.fingerprint_mode == "rgb":
            meta[K_BITS] = str(self.input_bits)
        if self.detection_head:
            meta[K_DET_HEAD] = json.dumps(self.detection_head, sort_keys=True)
        if self.detection_confidence:
            meta[K_DET_CONF] = repr(float(self.detection_confidence))
        if self.family_margin is not None:
            meta[K_FAMILY_M] = repr(float(self.family_margin))
        if self.counts_input:
            meta[K_COUNTS] = json.dumps(self.counts_input, sort_keys=True)
        return meta

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["real_prototype"] = list(self.real_prototype)
        return d


def parse_metadata(meta: Mapping[str, str], source: str = "model") -> ModelInfo:
    """Validate ``metadata_props`` against the contract and return a :class:`ModelInfo`.

    Raises :class:`ContractError` naming ``source`` and every problem found.
    """
    _check_keys_and_version(meta, source)
    try:
        info = _info_from_metadata(meta)
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ContractError(f"{source}: malformed lida metadata: {exc}") from exc
    problems = _info_problems(info)
    if info.detection_head:
        problems += _head_problems(info.detection_head, info.embedding_dim)
        if meta[K_CONTRACT] == "1":
            problems.append(f"{K_DET_HEAD} needs contract version 2")
    if problems:
        raise ContractError(f"{source}: " + "; ".join(problems))
    return info


def _check_keys_and_version(meta: Mapping[str, str], source: str) -> None:
    """Raise :class:`ContractError` when a required key is missing or the contract version is unread."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ContractError(f"{source}: not a lida encoder, metadata keys missing: {', '.join(missing)}")
    if meta[K_CONTRACT] not in SUPPORTED_VERSIONS:
        raise ContractError(
            f"{source}: model contract version {meta[K_CONTRACT]!r}, this runtime reads"
            f" {' and '.join(repr(v) for v in SUPPORTED_VERSIONS)}"
        )


def _info_from_metadata(meta: Mapping[str, str]) -> ModelInfo:
    """Convert the metadata strings to a :class:`ModelInfo` (``ValueError``/``TypeError`` on bad values)."""
    return ModelInfo(
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
        input_bits=int(meta.get(K_BITS) or 0),
        detection_head=json.loads(meta[K_DET_HEAD]) if meta.get(K_DET_HEAD) else {},
        detection_confidence=float(meta.get(K_DET_CONF) or 0.0),
        family_margin=float(meta[K_FAMILY_M]) if meta.get(K_FAMILY_M) else None,
        counts_input=json.loads(meta[K_COUNTS]) if meta.get(K_COUNTS) else {},
    )


def _info_problems(info: ModelInfo) -> list[str]:
    """What is wrong with the values of a parsed :class:`ModelInfo`, apart from its detection head."""
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
    if not 0.0 <= info.detection_confidence < 1.0:
        problems.append("detection_fpr_confidence must be in [0, 1)")
    if not -1.0 <= info.open_set_threshold <= 1.0:
        problems.append("open-set threshold must be a cosine similarity in [-1, 1]")
    if info.family_margin is not None and not 0.0 <= info.family_margin <= 2.0:
        problems.append("family margin must be a difference of cosine similarities in [0, 2]")
    if not isinstance(info.counts_input, dict):
        problems.append(f"{K_COUNTS} must be a JSON object")
    if info.input_bits not in INPUT_BITS:
        problems.append(f"input_bits {info.input_bits} not one of {INPUT_BITS}")
    if info.input_bits == 3 and info.fingerprint_mode == "rgb":
        problems.append("an rgb model reads the full pixel value: input_bits must be 8")
    return problems


def _head_problems(head: Mapping[str, Any], dim: int) -> list[str]:
    """What is wrong with a ``lida.detection_head`` (empty when it is usable)."""
    kind, version = head.get("kind"), head.get("version")
    if kind not in DETECTION_HEADS:
        return [f"detection head kind {kind!r} not one of {sorted(DETECTION_HEADS)}"]
    if version not in DETECTION_HEADS[kind]:
        return [f"detection head {kind!r} version {version!r}; this runtime reads {DETECTION_HEADS[kind]}"]
    w, b = head.get("w"), head.get("b")
    if not isinstance(w, list) or len(w) != dim or not all(isinstance(v, int | float) for v in w):
        return [f"detection head 'w' must be {dim} numbers (embedding_dim)"]
    if not isinstance(b, int | float):
        return ["detection head 'b' must be a number"]
    if version == 2:
        return _noise_problems(head.get("noise"), dim)
    return []


def _numbers(v: Any, n: int | None = None) -> bool:
    return isinstance(v, list) and (n is None or len(v) == n) and all(isinstance(x, int | float) for x in v)


def _noise_problems(noise: Any, dim: int) -> list[str]:
    """What is wrong with a version-2 head's ``noise`` block (empty when it is usable)."""
    if not isinstance(noise, Mapping):
        return ["detection head version 2 needs a 'noise' object"]
    score, version = noise.get("score"), noise.get("version")
    if version not in NOISE_SCORES.get(score, ()):
        return [f"detection head noise score {score!r} version {version!r}; this runtime reads {NOISE_SCORES}"]
    cap, knots = noise.get("cap"), noise.get("knots")
    if not isinstance(cap, int | float) or cap <= 0 or not _numbers(knots) or list(knots) != sorted(knots):
        return ["detection head noise 'cap' must be a positive number and 'knots' ascending numbers"]
    if not _numbers(noise.get("v"), len(knots) + 1):
        return [f"detection head noise 'v' must be {len(knots) + 1} numbers (one more than the knots)"]
    if not _numbers(noise.get("u"), dim):
        return [f"detection head noise 'u' must be {dim} numbers (embedding_dim)"]
    return []


def head_needs_noise(head: Mapping[str, Any]) -> bool:
    """Whether a detection head reads the image's noise floor (version 2) besides its embedding."""
    return bool(head) and head.get("version") == 2


def noise_head_features(embeddings: Any, noise: Any, cap: float, knots: Sequence[float]) -> Any:
    """What a version-2 head is linear in, per image: ``[e, m, (m - k_1)+, ..., (m - k_J)+, m e]`` with
    ``m = min(n, cap)`` for embeddings ``e`` ``[M, D]`` and noise floors ``n`` ``[M]``; ``[M, 2D + J + 1]``
    float64. :func:`head_score` scores it and the exporter fits on it, so the two cannot drift."""
    import numpy as np

    e = np.asarray(embeddings, dtype=np.float64)
    m = np.minimum(np.asarray(noise, dtype=np.float64).reshape(-1), float(cap))[:, None]
    return np.hstack([e, m, np.maximum(0.0, m - np.asarray(knots, dtype=np.float64)), m * e])


def counts_stage(info: ModelInfo) -> dict[str, Any] | None:
    """The model's ``spam-counts`` stage (:data:`K_COUNTS`) when this runtime can compute it, else ``None``
    (no stage, or a kind, version or parameters it does not know: the graph then gets crops)."""
    c = info.counts_input
    kind = c.get("kind") if c else None
    if not isinstance(kind, str) or c.get("version") not in COUNT_STAGES.get(kind, ()):
        return None
    T, channels, name = c.get("T"), c.get("channels"), c.get("input")
    if type(T) is not int or T < 1 or channels not in (3, 5) or not isinstance(name, str) or not name:
        return None
    return {"input": name, "T": T, "colour": channels == 5}


def head_score(embeddings: Any, head: Mapping[str, Any], noise: Any = None) -> Any:
    """``ai_score`` of a ``logistic`` detection head per image embedding ``e`` (the L2-normalised mean of
    the crop embeddings); ``[M, D]`` in, ``[M]`` float64 out.

    Version 1: ``sigmoid(w . e + b)``. Version 2 also reads each image's noise floor ``n`` (``noise``,
    ``[M]``: :func:`lida_plugin.noisegate.noise_score` of the crops the model read), with ``m = min(n, cap)``:
    ``sigmoid(w . e + b + v . [m, (m - k_1)+, ...] + m (u . e))`` (:func:`noise_head_features`): a shift of
    the score and a change of its direction with the noise, because light noise moves a real photo's
    statistics towards a generator's (docs/evaluation.md, "Light noise")."""
    import numpy as np

    e = np.asarray(embeddings, dtype=np.float64)
    if not head_needs_noise(head):
        z = e @ np.asarray(head["w"], dtype=np.float64) + float(head["b"])
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow warnings
    if noise is None:
        raise ValueError("this detection head reads the images' noise floor: pass noise=")
    nz = head["noise"]
    if np.size(noise) != len(e):
        raise ValueError(f"{np.size(noise)} noise floors for {len(e)} embeddings")
    w = np.concatenate([np.asarray(head["w"]), np.asarray(nz["v"]), np.asarray(nz["u"])]).astype(np.float64)
    z = noise_head_features(e, noise, nz["cap"], nz["knots"]) @ w + float(head["b"])
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow warnings


def ai_score(similarity_to_real: float | Any, temperature: float) -> float | Any:
    """Detection score: ``1 - sigmoid(sim(x, p_real) / tau) = sigmoid(-sim / tau)``.

    This is the probability of "generated" under the detection loss ``L_D`` the model was
    adapted with; numpy arrays are accepted too.
    """
    import numpy as np

    return 1.0 / (1.0 + np.exp(np.asarray(similarity_to_real, dtype=np.float64) / temperature))
