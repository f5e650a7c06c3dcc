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
    #: the image or video file the frame came from ("" for cameras and streams); logged with each event
    file: str = ""
    #: an independent photo: nothing is carried over from the frame before (photo mode)
    still: bool = False
    #: video time: seconds since the start of its video file (None: live, where `timestamp` is the video time)
    pts: float | None = None


#: BlazeFace's six keypoints, in this order (rows of Detection.keypoints)
KEYPOINTS: tuple[str, ...] = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


@dataclass
class Detection:
    """One face a detector found. `keypoints`: (6, 2) float32 full-frame (x, y) in KEYPOINTS order
    (the subject's right eye is on the image's left), or None for a detector without them (Haar)."""

    box: Box
    score: float = 1.0
    keypoints: np.ndarray | None = None

    def moved(self, dx: int, dy: int) -> "Detection":
        """The same face in a frame whose origin is (-dx, -dy) from this one's (window -> frame)."""
        x, y, w, h = self.box
        kp = None if self.keypoints is None else self.keypoints + np.float32([dx, dy])
        return Detection((x + dx, y + dy, w, h), self.score, kp)


@dataclass
class FaceResult:
    """One tracked face in one frame, after classification and smoothing."""

    track_id: int
    box: Box
    probs: np.ndarray  # smoothed probabilities, in `labels` order
    label: str  # argmax label, or "uncertain" below --min-confidence
    score: float  # probability of the argmax label
    raw_probs: np.ndarray | None = None  # this frame's unsmoothed probabilities (None if not classified)
    #: why the label is "uncertain" although the model gave one ("turned", "small", "low confidence"), else ""
    reason: str = ""
    keypoints: np.ndarray | None = None  # (6, 2) full-frame keypoints of this frame's detection, if any


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
    #: earlier frames' events of tracks confirmed in this frame (tracker.TrackGate), oldest first: one
    #: FrameResult per earlier frame, holding only those faces, its Frame without the image. Event
    #: sinks (logs, MQTT, summary, metrics) write them before this frame's; image sinks ignore them.
    late: list["FrameResult"] = field(default_factory=list)
