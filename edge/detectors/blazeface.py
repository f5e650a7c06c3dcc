"""BlazeFace (MediaPipe's face detector) run by the same TFLite interpreter as the classifier.

The default detector. Against Haar (measured in benchmarks/pipeline_accuracy.py):

* faster (one 128x128 CNN pass, ~1-2 ms here, independent of how many faces or how small the
  search scale) and much more robust to head pose, tilt, partial occlusion and uneven light; it
  gives a real confidence score and six keypoints (eyes, nose tip, mouth, ears), which the aligner
  uses to level the face and the quality check to tell a turned head;
* the models ship with fer-edge (models/face_detection/, Apache-2.0, see its PROVENANCE.md):
  `blazeface` = face_detection_short_range.tflite (128x128, 896 anchors, faces within ~2 m),
  `blazeface-full` = face_detection_full_range_sparse.tflite (192x192, 2304 anchors, up to ~5 m);
* the short-range model is trained on selfie-distance faces: a face smaller than ~1/6 of the
  frame's longer side is often missed; the full-range model finds those (at ~3x the cost), and
  `--min-face` below that reach switches to it.

Decoding follows MediaPipe's SSD anchor and TensorsToDetections calculators: anchors are cell
centres of each feature map (fixed size 1x1), the regressor gives 16 numbers per anchor -- box
centre offset x, y, box w, h, then 6 keypoints (x, y) -- all in input pixels; the score is a sigmoid
of a clipped logit. Overlapping boxes are merged by weighted NMS (score-weighted average of each
cluster, box and keypoints alike: MediaPipe's default for faces).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import logging

import cv2
import numpy as np

from ..classifier import interpreter_backend
from ..config import DetectorConfig
from ..errors import ConfigError, ContractError, ModelError
from ..records import Detection
from .base import Detector, clip_box


@dataclass(frozen=True)
class AnchorSpec:
    """One BlazeFace variant's SSD anchor layout."""

    input_size: int
    strides: tuple[int, ...]  # one per anchor layer (layers with equal strides share a feature map)
    anchors_per_layer: int  # aspect ratio 1.0, plus 1 more if interpolated_scale_aspect_ratio > 0

    @property
    def count(self) -> int:
        return len(ssd_anchors(self))


#: face_detection_short_range.tflite: 16x16x2 + 8x8x6 = 896 anchors
SHORT_RANGE = AnchorSpec(128, (8, 16, 16, 16), 2)
#: face_detection_full_range.tflite: 48x48x1 = 2304 anchors
FULL_RANGE = AnchorSpec(192, (4,), 1)
SPECS = {spec.input_size: spec for spec in (SHORT_RANGE, FULL_RANGE)}

RAW_SCORE_CLIP = 100.0
#: the short-range model finds faces down to about this fraction of the frame's longer side
#: (measured on real photos in benchmarks/pipeline_accuracy.py: ~100 px at 640x480; the full-range
#: model reaches ~60 px)
SHORT_RANGE_REACH = 0.16
NUM_COORDS = 16


def ssd_anchors(spec: AnchorSpec) -> np.ndarray:
    """(N, 2) anchor centres (x, y), normalised 0..1, in MediaPipe's order.

    Consecutive layers with the same stride share one feature map: per cell, all their anchors
    come together (row by row, cell by cell), exactly as SsdAnchorsCalculator lays them out.
    """
    centres = []
    layer = 0
    strides = spec.strides
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = (last - layer) * spec.anchors_per_layer
        side = int(np.ceil(spec.input_size / strides[layer]))
        ys, xs = np.mgrid[0:side, 0:side]
        cell = np.stack([(xs + 0.5) / side, (ys + 0.5) / side], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cell, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> np.ndarray:
    """(N, 16) raw regressors -> (N, 4) boxes (xmin, ymin, xmax, ymax) normalised to the input."""
    raw = np.asarray(raw, np.float32).reshape(len(anchors), -1)
    scale = float(input_size)
    cx = raw[:, 0] / scale + anchors[:, 0]
    cy = raw[:, 1] / scale + anchors[:, 1]
    w = raw[:, 2] / scale
    h = raw[:, 3] / scale
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def decode_keypoints(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> np.ndarray:
    """(N, 16) raw regressors -> (N, 6, 2) keypoints (eyes, nose, mouth, ears), normalised."""
    raw = np.asarray(raw, np.float32).reshape(len(anchors), -1)
    kp = raw[:, 4:NUM_COORDS].reshape(len(anchors), -1, 2) / float(input_size)
    return kp + anchors[:, None, :]


def scores_from_logits(raw_scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(raw_scores, np.float64).reshape(-1), -RAW_SCORE_CLIP, RAW_SCORE_CLIP)
    return (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)  # float64: exp(100) fits


def iou_xyxy(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box against (N, 4) boxes, all (xmin, ymin, xmax, ymax)."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-max suppression: each cluster -> its score-weighted mean box.

    Boxes are taken best-first; every remaining box overlapping the best by more than
    `iou_threshold` joins its cluster and is removed. The cluster keeps the best score.
    Rows may carry more columns after the four box coordinates (keypoints): they are averaged too.
    """
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    scores = scores[order]
    out: list[tuple[np.ndarray, float]] = []
    while len(boxes):
        overlap = iou_xyxy(boxes[0, :4], boxes[:, :4])
        members = overlap > iou_threshold
        members[0] = True
        weights = scores[members]
        merged = (boxes[members] * weights[:, None]).sum(axis=0) / weights.sum()
        out.append((merged, float(scores[0])))
        boxes = boxes[~members]
        scores = scores[~members]
    return out


def plain_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3) -> list[tuple[np.ndarray, float]]:
    """Classic NMS: keep the best box, drop those overlapping it, repeat (extra columns ride along)."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    scores = scores[order]
    out = []
    while len(boxes):
        out.append((boxes[0], float(scores[0])))
        keep = iou_xyxy(boxes[0, :4], boxes[:, :4]) <= iou_threshold
        keep[0] = False
        boxes = boxes[keep]
        scores = scores[keep]
    return out


def shipped_model(kind: str = "blazeface") -> Path:
    """The BlazeFace file fer-edge ships for detector `kind` ("blazeface" or "blazeface-full")."""
    from fer_edge_models import FACE_DETECTORS

    if kind not in FACE_DETECTORS:
        raise ConfigError(f"no shipped BlazeFace model for detector {kind!r} (known: {', '.join(FACE_DETECTORS)})")
    return FACE_DETECTORS[kind]


log = logging.getLogger(__name__)


class BlazeFaceDetector(Detector):
    name = "blazeface"

    def __init__(
        self,
        model_path: str | Path,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.3,
        weighted: bool = True,
        min_face: int = 0,
        threads: int = 1,
    ) -> None:
        self.threads = max(1, int(threads))
        self.full_range_for_small = False
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.weighted = bool(weighted)
        self.min_face = int(min_face)
        self._load(Path(model_path))

    def _load(self, model_path: Path) -> None:
        """Open a BlazeFace .tflite in the shared interpreter and read its tensors' layout."""
        if not model_path.is_file():
            raise ModelError(f"BlazeFace model not found: {model_path}")
        try:
            interpreter = interpreter_backend().Interpreter(model_path=str(model_path), num_threads=self.threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {model_path} as a TFLite model: {exc}") from None
        self.model_path, self.interpreter = model_path, interpreter
        self._setup_tensors()

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> "BlazeFaceDetector":
        """`kind` "blazeface" (short range) or "blazeface-full"; `model` replaces the shipped file.

        With the shipped short-range model, a `min_face` below what it can see in the frames that
        arrive switches to the full-range model at the first frame (logged once).
        """
        det = cls(cfg.model or shipped_model(cfg.kind), score_threshold=cfg.score_threshold, min_face=cfg.min_face,
                  threads=cfg.threads)
        det.full_range_for_small = not cfg.model and cfg.kind == "blazeface" and cfg.min_face > 0
        return det

    def _check_reach(self, width: int, height: int) -> None:
        """First frame: does the short-range model see faces as small as `min_face`? Else full range."""
        self.full_range_for_small = False
        reach = SHORT_RANGE_REACH * max(width, height)
        if self.min_face < reach:
            log.info("faces down to %d px in a %dx%d frame are below the short-range model's reach (~%d px): "
                     "using the full-range model", self.min_face, width, height, reach)
            self._load(shipped_model("blazeface-full"))

    def _setup_tensors(self) -> None:
        name = self.model_path.name
        inp = self.interpreter.get_input_details()[0]
        shape = tuple(int(s) for s in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2] or shape[1] not in SPECS:
            raise ContractError(
                f"{name}: input shape {shape} is not a BlazeFace model's "
                f"(want (1, S, S, 3) with S in {sorted(SPECS)})"
            )
        self.spec = SPECS[shape[1]]
        self.input_size = shape[1]
        self.anchors = ssd_anchors(self.spec)
        n = len(self.anchors)
        outputs = self.interpreter.get_output_details()
        reg = [o for o in outputs if tuple(o["shape"])[-2:] == (n, NUM_COORDS)]
        cls_ = [o for o in outputs if tuple(o["shape"])[-2:] == (n, 1)]
        if len(reg) != 1 or len(cls_) != 1:
            shapes = [tuple(int(s) for s in o["shape"]) for o in outputs]
            raise ContractError(
                f"{name}: outputs {shapes} are not BlazeFace's (want (1, {n}, {NUM_COORDS}) and (1, {n}, 1))"
            )
        self._in = inp
        self._reg, self._cls = reg[0], cls_[0]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_q = inp.get("quantization", (0.0, 0))
        self._rgb = np.zeros((self.input_size, self.input_size, 3), np.uint8)  # letterboxed input, reused

    def describe(self) -> str:
        return f"blazeface ({self.model_path.name}, {self.input_size}x{self.input_size}, {len(self.anchors)} anchors)"

    # ------------------------------------------------------------------ steps (each testable alone)
    def letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """Fit the frame into the square input, keeping its aspect; returns (rgb, scale, pad_x, pad_y)."""
        height, width = image_bgr.shape[:2]
        size = self.input_size
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        self._rgb[:] = 0
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
        cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=self._rgb[pad_y:pad_y + new_h, pad_x:pad_x + new_w])
        return self._rgb, scale, pad_x, pad_y

    def input_tensor(self, rgb: np.ndarray) -> np.ndarray:
        x = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0  # MediaPipe: [-1, 1]
        if np.issubdtype(self._in_dtype, np.integer):
            scale, zero = self._in_q
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return x.astype(self._in_dtype)[None]

    def _output(self, detail: dict) -> np.ndarray:
        out = self.interpreter.get_tensor(detail["index"]).astype(np.float32)
        scale, zero = detail.get("quantization", (0.0, 0))
        if np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale:
            out = (out - zero) * scale
        return out.reshape(len(self.anchors), -1)

    def postprocess(self, raw_boxes: np.ndarray, raw_scores: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Raw tensors -> [(row, score)], after threshold and NMS; a row is the box (xmin, ymin, xmax,
        ymax) then the six keypoints (x, y), all normalised to the input."""
        scores = scores_from_logits(raw_scores)
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw = np.asarray(raw_boxes, np.float32).reshape(len(self.anchors), -1)[keep]
        anchors = self.anchors[keep]
        rows = np.concatenate([decode_boxes(raw, anchors, self.input_size),
                               decode_keypoints(raw, anchors, self.input_size).reshape(len(raw), -1)], axis=1)
        nms = weighted_nms if self.weighted else plain_nms
        return nms(rows, scores[keep], self.iou_threshold)

    def detect(self, image_bgr: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        if self.full_range_for_small:
            self._check_reach(image_bgr.shape[1], image_bgr.shape[0])
        rgb, scale, pad_x, pad_y = self.letterbox(image_bgr)
        self.interpreter.set_tensor(self._in["index"], self.input_tensor(rgb))
        self.interpreter.invoke()
        found = self.postprocess(self._output(self._reg), self._output(self._cls))
        height, width = image_bgr.shape[:2]
        size = self.input_size
        out = []
        to_frame_scale = np.float32(size / scale)
        to_frame_shift = np.float32([pad_x / scale, pad_y / scale])
        for row, score in found:
            # normalised input coords -> letterboxed input pixels -> frame pixels
            fx0, fy0, fx1, fy1 = row[:4] * to_frame_scale - np.tile(to_frame_shift, 2)
            box = clip_box(fx0, fy0, fx1 - fx0, fy1 - fy0, width, height)
            if box is not None and min(box[2], box[3]) >= self.min_face:
                keypoints = (row[4:].reshape(-1, 2) * to_frame_scale - to_frame_shift).astype(np.float32)
                out.append(Detection(box, score, keypoints))
        return out
