"""The face detector interface: one method, plain data in and out.

A detector takes the full BGR frame (and, when the source has one, a smaller grayscale image of
the same view) and returns face boxes in full-frame pixel coordinates. New detectors subclass
`Detector`, live in their own module and are registered by name in `detectors/__init__.py`
(like Frigate's detector plugins): `[detector] kind = "..."` in the config picks one.
"""
from __future__ import annotations

import numpy as np

from ..records import Box, Detection


class Detector:
    """Base class. Subclasses implement `detect`; `close` releases what they hold."""

    name = "detector"

    def detect(self, image_bgr: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        """Faces in `image_bgr` as (x, y, w, h) boxes of the full frame, best first.

        `gray`, when given, is a smaller grayscale image of the same view (picamera2's lores luma);
        a detector may use it instead of converting and downscaling the frame itself.
        """
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> Box | None:
    """Round a box to integers inside a width x height frame; None when nothing is left of it."""
    x0 = max(0, int(round(x)))
    y0 = max(0, int(round(y)))
    x1 = min(int(width), int(round(x + w)))
    y1 = min(int(height), int(round(y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def suppress_duplicates(detections: list[Detection], iou_threshold: float = 0.3,
                        nested: float = 0.6) -> list[Detection]:
    """One box per face: drop a detection that overlaps a better one (IoU above `iou_threshold`) or
    lies mostly inside it or around it (the intersection covers more than `nested` of the smaller box).

    Detectors sometimes give a face twice: Haar a second, nested or shifted box at another scale;
    two search windows the same face. Kept in the order given (best first); the first wins.
    """
    kept: list[Detection] = []
    for det in detections:
        x, y, w, h = det.box
        duplicate = False
        for other in kept:
            ox, oy, ow, oh = other.box
            iw = min(x + w, ox + ow) - max(x, ox)
            ih = min(y + h, oy + oh) - max(y, oy)
            if iw <= 0 or ih <= 0:
                continue
            inter = float(iw * ih)
            if inter / (w * h + ow * oh - inter) > iou_threshold or inter / min(w * h, ow * oh) > nested:
                duplicate = True
                break
        if not duplicate:
            kept.append(det)
    return kept
