"""The model contract: the ONE place that says what goes into a model and what comes out.

`fer_train` (training and evaluation), `fer_convert` (calibration and the gate) and the edge
runtime all import from here, so a face is never prepared two different ways.

Contract, for every model this project ships or converts:
  input  = grayscale face, raw pixel values 0..255, resized to the model's input H x W,
           shape (1, H, W, 1); normalisation lives inside the model. For an int8 input tensor
           the values are quantised with that tensor's own scale / zero point.
  output = one score per label (probabilities, softmax) in the order of the model card's
           `labels`; FER2013 models use EMOTIONS below.
A sidecar JSON (the model card) gives labels, input size, metrics, training config, data hash.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .errors import ContractError

#: FER2013 label order (the dataset's own integer codes 0..6).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: FER+ models: FER2013 order first (so index i means the same emotion), then contempt.
FERPLUS_EMOTIONS: tuple[str, ...] = EMOTIONS + ("contempt",)
#: FER+ vote columns as stored in ferplus_votes.npz, and where each lands in FERPLUS_EMOTIONS
#: (None = not an emotion: "unknown" and "NF" (not a face)).
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
FERPLUS_VOTE_TO_LABEL: tuple[int | None, ...] = (6, 3, 5, 4, 0, 1, 2, 7, None, None)

#: FER2013 faces are 48x48; models may choose another size and say so in their card.
DEFAULT_INPUT_SIZE: tuple[int, int] = (48, 48)
INPUT_RANGE: tuple[float, float] = (0.0, 255.0)



@dataclasses.dataclass(frozen=True)
class FaceTemplate:
    """Where FER2013's framing puts a face, for one detector's box convention.

    All values are fractions of the model input's side (so they hold for any H x W): the eye
    midpoint, the detector box's centre, and the detector box's side. The aligner (edge/align.py)
    maps a detected face onto these. Measured by `python benchmarks/align_template.py` (each
    detector on upscaled FER2013 Training faces, median over the faces it found).
    """

    eye_mid: tuple[float, float]
    box_center: tuple[float, float]
    box_side: float


#: detector box convention -> template; numbers from benchmarks/results/align_template.json
FACE_TEMPLATES: dict[str, FaceTemplate] = {
    "blazeface": FaceTemplate(eye_mid=(0.4983, 0.3974), box_center=(0.4974, 0.5833), box_side=0.8594),
    "haar": FaceTemplate(eye_mid=(0.4983, 0.3974), box_center=(0.5, 0.5), box_side=0.9688),
    # a face crop given whole (--detector whole-image): the crop is the model input, as cropped
    "whole-image": FaceTemplate(eye_mid=(0.4983, 0.3974), box_center=(0.5, 0.5), box_side=1.0),
}

#: Suffixes that name a variant of one model; they share the model card of the base name.
VARIANT_SUFFIXES: tuple[str, ...] = ("_int8_edgetpu", "_edgetpu", "_int8", "_float16", "_float32", "_dynamic")


# --------------------------------------------------------------------------- preprocessing
def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 grayscale view of `image` (gray, BGR, BGRA or (H, W, 1))."""
    image = np.asarray(image)
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise ContractError(f"expected a grayscale or BGR image, got an array of shape {image.shape}")
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    return gray


def preprocess(face: np.ndarray, input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """Face crop (gray or BGR, any size) -> float32 (H, W) array of raw 0..255 pixel values.

    INTER_AREA when shrinking (what FER2013's 48x48 faces look like), INTER_LINEAR when growing.
    """
    gray = to_gray(face)
    if gray.size == 0:
        raise ContractError("empty face crop")
    h, w = int(input_size[0]), int(input_size[1])
    if gray.shape != (h, w):
        shrinking = gray.shape[0] > h or gray.shape[1] > w
        gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return gray.astype(np.float32)


def batch_to_model_input(faces: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8/float faces already at input size -> float32 (N, H, W, 1), values 0..255.

    What training and the float gate feed a Keras model; the same values `preprocess` gives.
    """
    faces = np.asarray(faces)
    if faces.ndim == 4 and faces.shape[-1] == 1:
        faces = faces[..., 0]
    if faces.ndim != 3:
        raise ContractError(f"expected faces of shape (N, H, W), got {faces.shape}")
    return faces.astype(np.float32)[..., None]


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Quantise real values with a tensor's own (scale, zero_point) into its integer dtype."""
    info = np.iinfo(dtype)
    if scale == 0:
        raise ContractError("input tensor is integer but has no quantisation scale")
    q = np.round(np.asarray(x, np.float32) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor values -> real values."""
    return (np.asarray(q, np.float32) - zero_point) * np.float32(scale)


# --------------------------------------------------------------------------- model cards
#: a card's metrics.calibration.folded when the temperature went into the last Dense layer
TEMPERATURE_IN_DENSE = "logits / T in the last Dense layer, before the softmax, then converted"


@dataclasses.dataclass
class ModelCard:
    """What a model file cannot say about itself; saved as JSON next to it."""

    name: str
    labels: list[str] = dataclasses.field(default_factory=lambda: list(EMOTIONS))
    input_size: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_INPUT_SIZE))
    input_channels: int = 1
    input_range: list[float] = dataclasses.field(default_factory=lambda: list(INPUT_RANGE))
    output: str = "probabilities"
    architecture: str = ""
    params: int | None = None
    macs: int | None = None
    #: variant name ("keras", "float32", "int8", "float16", "dynamic", "edgetpu") -> file name
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    #: file name -> size in bytes
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    #: free-form, e.g. {"float": {"PublicTest": {...}, "PrivateTest": {...}}, "int8": {...}, "gate": {...}}
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: {"path": ..., "sha256": ..., "format": ...}
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = dataclasses.field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def temperature_in_weights(self, file_name: str) -> float:
        """The temperature T this card's file `file_name` carries in its weights (fer-convert
        --temperature on a Keras model divides the last Dense layer by T before converting), else 1.

        Why: whoever wants the model's trained logits back (a distillation teacher) multiplies by it.
        A temperature set in place on a converted file is its softmax's beta instead, read from the
        file itself (fer_convert.tflite_graph.softmax_beta), and is not counted here."""
        calibration = self.metrics.get("calibration") or {}
        if calibration.get("folded") != TEMPERATURE_IN_DENSE:
            return 1.0
        variant = next((v for v, f in self.files.items() if f == file_name), None)
        return float(calibration["temperature"]) if variant in calibration.get("variants", ()) else 1.0

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None) -> "ModelCard":
        """A card from parsed JSON; every known key is checked against its field's type hint.

        Unknown keys are ignored (newer cards stay readable); a wrong type is a ContractError that
        names the card (`where`) and the key."""
        from .typecheck import Mismatch, check, field_hints

        where = where or "model card"
        if not isinstance(d, dict):
            raise ContractError(f"{where}: expected a JSON object, got {type(d).__name__ if d is not None else 'null'}")
        missing = {"name", "labels", "input_size"} - set(d)
        if missing:
            raise ContractError(f"{where} lacks {', '.join(sorted(missing))}")
        hints = field_hints(cls)
        values = {}
        for key, value in d.items():
            if key not in hints:
                continue
            try:
                values[key] = check(value, hints[key])
            except Mismatch as exc:
                raise ContractError(f"{where}: {key}: {exc}") from None
        card = cls(**values)
        card.validate(where)
        return card

    def validate(self, where: str | None = None) -> None:
        where = where or f"model card {self.name!r}"
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ContractError(f"{where}: labels must be distinct and non-empty")
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ContractError(f"{where}: input_size must be [H, W] (each >= 8), got {self.input_size}")
        if self.input_channels != 1:
            raise ContractError(f"{where}: the contract takes grayscale input (1 channel)")

    def save(self, path: str | os.PathLike) -> Path:
        self.validate()
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelCard":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ContractError(f"model card not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContractError(f"model card {path} is not valid JSON: {exc}") from None
        except OSError as exc:
            raise ContractError(f"cannot read the model card {path}: {exc.strerror or exc}") from None
        return cls.from_dict(data, where=f"model card {path}")


def base_name(model_path: str | os.PathLike) -> str:
    """`fer_default_int8.tflite` -> `fer_default` (variants share one card)."""
    stem = Path(model_path).stem
    for suffix in VARIANT_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def card_path_for(model_path: str | os.PathLike) -> Path:
    """Where a model's card lives: `<stem>.json`, else the shared `<base>.json` of its variants."""
    model_path = Path(model_path)
    own = model_path.with_suffix(".json")
    if own.exists() or model_path.is_dir():
        return own
    return model_path.with_name(base_name(model_path) + ".json")


def load_card_for(model_path: str | os.PathLike) -> ModelCard | None:
    """The model's card, or None when it has none (the runtime then reads shapes from the model)."""
    path = card_path_for(model_path)
    return ModelCard.load(path) if path.exists() else None


# --------------------------------------------------------------------------- small shared helpers
def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file: the data hash that ties a model to the exact data it saw."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same folder, then rename: no half-written file is ever seen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; a model card must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
