"""Photo search: every face of a still photo, however small in the picture, found by BlazeFace.

Why: a BlazeFace pass sees the photo shrunk to its 128- or 192-px input, so it finds faces down to
a fixed fraction of the photo's longer side (short range ~1/6, full range ~1/11). That suits a
camera frame, where a face fills a good part of the view, but a group photo from a phone
(4032x3024) has faces of 100-200 px, 1/40-1/20 of it: one pass finds none of them
(benchmarks/group_photos.py). Time matters less for a photo than for a video frame, so a photo
gets more looks:

1. the whole photo, with the configured detector (kept as one pass keeps it) and with the
   full-range model;
2. overlapping square windows at a few sizes, from half the photo down to the size at which the
   full-range model reaches `smallest` px faces (`windows`); each window is one full-range pass;
3. a face the full-range model finds (whole photo or window) is kept only when a second look
   confirms it: the short-range model, on a view of `SECOND_LOOK_VIEW` times the face's box around
   it (the whole head in view, at another scale), finds a face there too, scoring at least
   `SECOND_LOOK_SCORE`. Small windows blown up to the model's input make textures look like faces
   (a galaxy field gave 13, a flag's stars one); the second look rejects most of them.

Boxes from every look are merged (`suppress_duplicates`): whole-photo boxes first, then the
windows from coarse to fine, so a face cut by a window's edge never replaces the whole face.
Video frames never come here: the loop calls this only for stills (`Frame.still`).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ..records import Detection
from ..tracker import iou
from .base import Detector, suppress_duplicates

log = logging.getLogger(__name__)

#: the full-range model finds faces down to about this fraction of its view's longer side
#: (real photos in benchmarks/pipeline_accuracy.py: 86 % found at 60 px in 640x480, all from 80 px)
FULL_RANGE_REACH = 0.09
#: neighbouring windows overlap by this fraction of their side: a face up to that size lies wholly
#: inside one of them (each level is responsible for faces up to ~0.16 of its side)
WINDOW_OVERLAP = 0.25
#: the smallest face searched for, px: FER2013's faces are 48 px, and below 28 px the model's
#: answer is marked "uncertain" anyway (--min-readable)
SMALLEST_FACE = 40
#: ... and at least this fraction of the photo's longer side, so that a 50-MP photo is not cut
#: into thousands of windows
SMALLEST_FRACTION = 0.01
#: the second look's view, in face-box sides, and the short-range score it must give the face. Chosen on
#: benchmarks/group_photos.py photos of two seeds other than the reported one (7 and 11): views of 2.5-6.5
#: boxes, scores 0.5-0.75; 3 boxes and 0.7 kept 89 and 85 of the 97 and 91 faces the windows found, and 3
#: and 0 of the false ones (5 boxes and 0.5, the first guess: 82 faces, 32 false)
SECOND_LOOK_VIEW = 3.0
SECOND_LOOK_SCORE = 0.7
#: a window's face and the second look's must overlap at least this much
SECOND_LOOK_IOU = 0.3


def _positions(length: int, side: int, stride: int) -> list[int]:
    """Window origins along one axis: every `stride`, and one flush with the far edge."""
    if side >= length:
        return [0]
    starts = list(range(0, length - side, stride))
    starts.append(length - side)
    return starts


def windows(width: int, height: int, smallest: float,
            reach: float = FULL_RANGE_REACH) -> list[tuple[int, int, int, int]]:
    """Square search windows (x, y, w, h) over a width x height photo, coarse to fine.

    Sides shrink geometrically from (at least) half the longer side to `smallest / reach`, the side
    at which the model finds `smallest` px faces, in steps of at most 2, so each face size is the
    business of some level; neighbours overlap by WINDOW_OVERLAP. Windows are clipped to the photo
    (a side longer than the photo's short side gives a strip). None when the whole-photo pass
    already reaches `smallest`.
    """
    longer = max(width, height)
    finest = smallest / reach
    if longer * reach <= smallest:
        return []
    levels = max(1, math.ceil(math.log2(longer / finest)))
    ratio = (longer / finest) ** (1.0 / levels)
    out: list[tuple[int, int, int, int]] = []
    for k in range(1, levels + 1):
        side = max(1, int(round(longer / ratio ** k)))
        stride = max(1, int(side * (1.0 - WINDOW_OVERLAP)))
        for y in _positions(height, side, stride):
            for x in _positions(width, side, stride):
                out.append((x, y, min(side, width - x), min(side, height - y)))
    return out


class PhotoSearch:
    """The configured detector plus windows and second looks, for still photos (see module doc).

    `far` is the full-range BlazeFace (windows), `near` the short-range one (second looks); either may
    be the configured detector itself. `for_detector` builds one that loads them from the shipped
    files at the first photo, so a camera run never pays for them.
    """

    def __init__(self, detector: Detector, far: Detector | None = None, near: Detector | None = None,
                 smallest: int = SMALLEST_FACE, min_face: int = 0) -> None:
        self.detector, self._far, self._near = detector, far, near
        self.smallest = int(smallest)
        self.min_face = int(min_face)  # boxes smaller than this are dropped, as the detector drops them
        #: counters over the photos searched so far (bench and tests read them)
        self.windows_searched = 0
        self.rejected = 0

    @classmethod
    def for_detector(cls, detector: Detector, min_face: int = 0) -> "PhotoSearch | None":
        """A search around `detector` when it is a BlazeFace detector; None otherwise (Haar already
        searches every scale). A `min_face` (--min-face) is the smallest face searched for, instead of
        SMALLEST_FACE."""
        from .blazeface import BlazeFaceDetector

        if not isinstance(detector, BlazeFaceDetector):
            return None
        return cls(detector, smallest=min_face or SMALLEST_FACE, min_face=min_face)

    def _shipped(self, kind: str) -> Detector:
        """The configured detector when it is the shipped `kind` model, else that model loaded alongside."""
        from .blazeface import BlazeFaceDetector, shipped_model

        path = shipped_model(kind)
        own = getattr(self.detector, "model_path", None)
        if own is not None and own.resolve() == path.resolve():
            return self.detector
        log.info("photo search: loading %s", path.name)
        return BlazeFaceDetector(path, score_threshold=getattr(self.detector, "score_threshold", 0.5),
                                 threads=getattr(self.detector, "threads", 1))

    @property
    def far(self) -> Detector:
        if self._far is None:
            self._far = self._shipped("blazeface-full")
        return self._far

    @property
    def near(self) -> Detector:
        if self._near is None:
            self._near = self._shipped("blazeface")
        return self._near

    def close(self) -> None:
        for model in (self._far, self._near):
            if model is not None and model is not self.detector:
                model.close()

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Every face in the photo, one box each (the configured detector's first, then the full-range
        model's over the whole photo and the windows, coarse to fine, each confirmed by a second look)."""
        height, width = image_bgr.shape[:2]
        found = sorted(self.detector.detect(image_bgr), key=lambda d: -d.score)  # what one pass finds
        looks = [] if self.far is self.detector else [(0, 0, width, height)]
        looks += windows(width, height, max(self.smallest, SMALLEST_FRACTION * max(width, height)))
        for x, y, w, h in looks:
            self.windows_searched += (w, h) != (width, height)
            for det in sorted(self.far.detect(image_bgr[y:y + h, x:x + w]), key=lambda d: -d.score):
                det = det.moved(x, y)
                if any(iou(det.box, other.box) > SECOND_LOOK_IOU for other in found):
                    continue  # already found: no second look needed, suppress_duplicates merges it
                if self.second_look(image_bgr, det) >= SECOND_LOOK_SCORE:
                    found.append(det)
                else:
                    self.rejected += 1
        return [d for d in suppress_duplicates(found) if min(d.box[2], d.box[3]) >= self.min_face]

    def second_look(self, image_bgr: np.ndarray, det: Detection) -> float:
        """The short-range model's score for a face where `det` is, shown the face with its
        surroundings (0.0: it finds none there)."""
        height, width = image_bgr.shape[:2]
        x, y, w, h = det.box
        half = SECOND_LOOK_VIEW * max(w, h) / 2.0
        cx, cy = x + w / 2.0, y + h / 2.0
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, int(math.ceil(cx + half))), min(height, int(math.ceil(cy + half)))
        return max((float(other.score) for other in self.near.detect(image_bgr[y0:y1, x0:x1])
                    if iou(other.moved(x0, y0).box, det.box) > SECOND_LOOK_IOU), default=0.0)

    def describe(self) -> str:
        return (f"photo search: whole photo + full-range windows (faces from {self.smallest} px), "
                f"short-range second look")
