"""Plain data passed between pipeline stages (source -> detect -> track -> classify -> smooth -> sinks).

Every stage takes and returns these, so each stage can be tested alone and swapped.
Boxes are (x, y, w, h) in integer pixels of the full frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]


@dataclass
class Frame:
    """One image from a source. `index` counts frames the source delivered (0-based)."""

    index: int
    image: np.ndarray  # BGR uint8 (H, W, 3)
    timestamp: float  # time.time() when grabbed
    source: str = ""
    #: a smaller grayscale (luma) image of the same view, when the source gives one for free
    #: (picamera2's YUV420 lores stream); detectors use it instead of downscaling `image`
    gray: np.ndarray | None = None


@dataclass
class Detection:
    box: Box
    score: float = 1.0


@dataclass
class FaceResult:
    """One tracked face in one frame, after classification and smoothing."""

    track_id: int
    box: Box
    probs: np.ndarray  # smoothed probabilities, in `labels` order
    label: str  # argmax label, or "uncertain" below --min-confidence
    score: float  # probability of the argmax label
    raw_probs: np.ndarray | None = None  # this frame's unsmoothed probabilities (None if not classified)


@dataclass
class FrameResult:
    """What the loop hands every sink, once per frame.

    `stage_ms` holds this frame's "grab", "detect", "preprocess", "classify" and "track" times in
    milliseconds; "sink" is the time the sinks took on the *previous* frame (this frame's sink time
    is not known while the sinks run; 0.0 on the first frame).
    """

    frame: Frame
    faces: list[FaceResult] = field(default_factory=list)
    labels: tuple[str, ...] = ()
    fps: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
