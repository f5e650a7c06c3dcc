"""No detection: every image (or frame) is one face, already cropped.

For datasets of face crops (FER2013-style 48-px faces, a folder of aligned crops): BlazeFace finds
~95 % of tight crops (a face that fills the picture has no head outline to go by), and each crop it
misses would leave no event. This "detector" returns the whole image as the face's box, so every
crop is classified, framed as it was cropped (the aligner maps the box onto the whole model input:
`contract.FACE_TEMPLATES["whole-image"]`). No keypoints: no eye levelling, no turned-head check.
"""
from __future__ import annotations

import numpy as np

from ..config import DetectorConfig
from ..records import Detection
from .base import Detector


class WholeImageDetector(Detector):
    name = "whole-image"

    def detect(self, image_bgr: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        height, width = image_bgr.shape[:2]
        return [Detection((0, 0, int(width), int(height)), 1.0, None)]

    def describe(self) -> str:
        return "whole-image (no detection: each image is one face crop)"

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> "WholeImageDetector":
        return cls()
