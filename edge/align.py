"""The aligner: a detected face -> the model's H x W input, framed the way FER2013 frames a face.

One similarity transform, one `cv2.warpAffine` on the face's neighbourhood:

* rotation: the eyes (BlazeFace keypoints) are made level, so a tilted head reaches the model
  upright, as the FER2013 faces it learned from are;
* scale: from the detector's box side, which a turned head hardly shrinks (the eye distance does:
  scaling by it over-zooms half profiles);
* position: the eye midpoint goes where FER2013's framing puts it.

Where FER2013 puts a face is measured, not guessed: `benchmarks/align_template.py` runs each
detector on upscaled FER2013 Training faces and takes the median box and keypoints; the numbers
live in the contract (`contract.FACE_TEMPLATES`) so training, conversion and the runtime agree.
A detector without keypoints (Haar) gets the same framing from its box alone, without rotation.

Quality: a face turned far from the camera (yaw, from where the nose sits between the eyes) or too
small to read is still classified, but its label becomes "uncertain" with a reason
(see `face_quality`); the thresholds are chosen on benchmarks/pipeline_accuracy.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .contract import FACE_TEMPLATES, FaceTemplate, to_gray
from .records import Box

#: when the warp would shrink by more than this, the neighbourhood is first shrunk to about the
#: output's scale with INTER_AREA (warpAffine's bilinear sampling aliases when it skips pixels)
PRESHRINK_BELOW = 0.7


def eye_angle(keypoints: np.ndarray) -> float:
    """Angle (radians, image coordinates) of the line from the face's right eye to its left eye."""
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    return math.atan2(ly - ry, lx - rx)


def yaw_estimate(keypoints: np.ndarray) -> float:
    """How far the head is turned, from the keypoints: 0 frontal, +-1 when the nose reaches an eye.

    The nose tip projected on the eye line, relative to the eye midpoint, in half eye distances.
    Sign: positive when the nose is toward the image's right. Clipped to [-1, 1].
    """
    right_eye, left_eye, nose = (np.asarray(keypoints[i], np.float64) for i in range(3))
    axis = left_eye - right_eye
    half = float(np.hypot(*axis)) / 2.0
    if half < 1e-6:
        return 1.0
    along = float(np.dot(nose - (right_eye + left_eye) / 2.0, axis / (2.0 * half)))
    return float(np.clip(along / half, -1.0, 1.0))


def face_quality(box: Box, keypoints: np.ndarray | None, max_yaw: float, min_readable: int) -> str:
    """"" when the face can be read, else why not: "turned" or "small"."""
    if min_readable > 0 and min(box[2], box[3]) < min_readable:
        return "small"
    if max_yaw > 0 and keypoints is not None and abs(yaw_estimate(keypoints)) > max_yaw:
        return "turned"
    return ""


@dataclass
class Aligner:
    """Face (box + optional keypoints) in a BGR or gray frame -> (H, W) float32 pixels 0..255."""

    input_size: tuple[int, int]
    template: FaceTemplate
    align: bool = True  # rotate by the eyes and place them (False: the template's box crop, no rotation)

    @classmethod
    def for_detector(cls, detector_name: str, input_size, align: bool = True) -> "Aligner":
        """The aligner matching a detector's box convention (BlazeFace's and Haar's boxes differ)."""
        name = str(detector_name)
        key = "haar" if name.startswith("haar") else "whole-image" if name == "whole-image" else "blazeface"
        return cls((int(input_size[0]), int(input_size[1])), FACE_TEMPLATES[key], align)

    def matrix(self, box: Box, keypoints: np.ndarray | None) -> np.ndarray:
        """2x3 affine matrix from frame pixels to model-input pixels."""
        h_out, w_out = self.input_size
        t = self.template
        x, y, w, h = box
        scale = t.box_side * w_out / ((w + h) / 2.0)
        if self.align and keypoints is not None:
            angle = eye_angle(keypoints)
            ax, ay = (keypoints[0] + keypoints[1]) / 2.0
            tx, ty = t.eye_mid
        else:
            angle = 0.0
            ax, ay = x + w / 2.0, y + h / 2.0
            tx, ty = t.box_center
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        # rotate by -angle about the anchor, scale, and move the anchor to the template's point
        return np.array([[cos, sin, tx * w_out - cos * ax - sin * ay],
                         [-sin, cos, ty * h_out + sin * ax - cos * ay]], np.float64)

    def __call__(self, image: np.ndarray, box: Box, keypoints: np.ndarray | None = None) -> np.ndarray:
        h_out, w_out = self.input_size
        m = self.matrix(box, keypoints)
        # only the face's neighbourhood is converted to gray (and pre-shrunk): the inverse map of the
        # output square, clipped to the frame
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [w_out, 0, 1], [0, h_out, 1], [w_out, h_out, 1]], np.float64) @ inv.T
        height, width = image.shape[:2]
        x0 = int(max(0, math.floor(corners[:, 0].min()) - 1))
        y0 = int(max(0, math.floor(corners[:, 1].min()) - 1))
        x1 = int(min(width, math.ceil(corners[:, 0].max()) + 2))
        y1 = int(min(height, math.ceil(corners[:, 1].max()) + 2))
        if x1 - x0 < 2 or y1 - y0 < 2:  # the face left the frame: the whole frame, nearest pixels
            x0, y0, x1, y1 = 0, 0, width, height
        patch = to_gray(image[y0:y1, x0:x1])
        m = m.copy()
        m[:, 2] += m[:, 0] * x0 + m[:, 1] * y0  # the patch's origin is (x0, y0) in the frame
        zoom = math.hypot(m[0, 0], m[0, 1])
        if zoom < PRESHRINK_BELOW:
            f = zoom
            size = (max(2, round(patch.shape[1] * f)), max(2, round(patch.shape[0] * f)))
            fx, fy = size[0] / patch.shape[1], size[1] / patch.shape[0]
            patch = cv2.resize(patch, size, interpolation=cv2.INTER_AREA)
            m[:, 0] /= fx
            m[:, 1] /= fy
        out = cv2.warpAffine(patch, m, (w_out, h_out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.astype(np.float32)
