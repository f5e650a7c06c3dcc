"""OpenCV's Haar frontal-face cascade, tuned for speed on a Raspberry Pi.

The cascade ships inside the OpenCV wheel (`cv2.data.haarcascades`), so nothing is downloaded.
Speed comes from working on less: the frame is converted to gray and downscaled by `scale`
(0.5 -> a quarter of the pixels) -- or the source's own small gray frame (picamera2 lores) is used
as it is -- optionally equalised, and the cascade never looks for faces smaller than `min_face`
full-frame pixels. Boxes are mapped back to full-frame coordinates.

Equalisation (`equalize`): "none" (default), "hist" (global cv2.equalizeHist) or "clahe" (local).
The cascade already normalises every search window by its own contrast, so equalising adds little,
and a *global* equalizeHist can hurt: when the background dominates the histogram (a bright window,
a plain wall) it squeezes the face's grey levels together. Measured on the test clip (a ~90 px face
crossing a 640x480 frame, scale 0.5; faces found in 36 frames): none 36/36 on all four backgrounds
tried; hist 36, 36, 15 and 2/36; clahe 34-35/36. "clahe" helps in very dim, low-contrast scenes.

Trade-offs: fast and dependency-free, but frontal faces only (a head turned more than ~30 degrees,
or tilted, is missed) and a few false positives on textured backgrounds; `min_neighbors` trades
those against misses. BlazeFace (`--detector blazeface`) is more robust to pose.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..config import DetectorConfig
from ..errors import ModelError
from ..records import Detection
from .base import Detector, clip_box

CASCADE_FILE = "haarcascade_frontalface_default.xml"
#: the cascade's own training window; asking for smaller faces finds nothing more
CASCADE_WINDOW = 24
#: min_face when the config leaves it to the detector (0)
DEFAULT_MIN_FACE = 48
EQUALIZE = ("none", "hist", "clahe")


def cascade_path(filename: str = CASCADE_FILE) -> Path:
    """Path of an OpenCV-bundled cascade, or ModelError if this OpenCV build has none."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        raise ModelError(
            "this OpenCV build has no bundled Haar cascades (cv2.data is missing); "
            "install opencv-python-headless>=4.8,<5 from PyPI (OpenCV 5 and distro builds lack them)"
        )
    path = Path(folder) / filename
    if not path.is_file():
        raise ModelError(f"Haar cascade not found: {path}")
    return path


class HaarDetector(Detector):
    name = "haar"

    def __init__(
        self,
        scale: float = 0.5,
        min_face: int = 48,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        cascade: str | Path | None = None,
        equalize: str = "none",
    ) -> None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if equalize not in EQUALIZE:
            raise ValueError(f"equalize must be one of {', '.join(EQUALIZE)}, got {equalize!r}")
        self.equalize = equalize
        self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)) if equalize == "clahe" else None
        self.scale = float(scale)
        self.min_face = int(min_face)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.path = Path(cascade) if cascade else cascade_path()
        self.cascade = cv2.CascadeClassifier(str(self.path))
        if self.cascade.empty():
            raise ModelError(f"cannot load Haar cascade {self.path}")
        # reused per frame: gray, small and equalised images (reallocated only if the size changes)
        self._gray: np.ndarray | None = None
        self._small: np.ndarray | None = None
        self._eq: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> "HaarDetector":
        from ..errors import ConfigError

        if not 0 < cfg.scale <= 1:
            raise ConfigError(f"detector scale must be in (0, 1], got {cfg.scale}")
        if cfg.equalize not in EQUALIZE:
            raise ConfigError(f"detector equalize must be one of {', '.join(EQUALIZE)}, got {cfg.equalize!r}")
        return cls(scale=cfg.scale, min_face=cfg.min_face or DEFAULT_MIN_FACE, equalize=cfg.equalize)

    def describe(self) -> str:
        return f"haar (scale {self.scale:g}, min face {self.min_face}px, equalize {self.equalize})"

    @staticmethod
    def _reuse(buf: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        return buf if buf is not None and buf.shape == shape else np.empty(shape, np.uint8)

    def _small_gray(self, image: np.ndarray, gray: np.ndarray | None) -> tuple[np.ndarray, float, float]:
        """The gray image to search and its (x, y) factors back to full-frame pixels."""
        height, width = image.shape[:2]
        if gray is not None:
            small = gray
        else:
            if image.ndim == 3:
                self._gray = self._reuse(self._gray, (height, width))
                cv2.cvtColor(image, cv2.COLOR_BGR2GRAY, dst=self._gray)
                full = self._gray
            else:
                full = image
            if self.scale < 1:
                size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
                self._small = self._reuse(self._small, (size[1], size[0]))
                cv2.resize(full, size, dst=self._small, interpolation=cv2.INTER_AREA)
                small = self._small
            else:
                small = full
        return small, width / small.shape[1], height / small.shape[0]

    def detect(self, image_bgr: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        small, fx, fy = self._small_gray(image_bgr, gray)
        if self.equalize != "none":
            self._eq = self._reuse(self._eq, small.shape)
            if self._clahe is not None:
                self._clahe.apply(small, dst=self._eq)
            else:
                cv2.equalizeHist(small, dst=self._eq)
            small = self._eq
        min_side = max(CASCADE_WINDOW, int(round(self.min_face / max(fx, fy))))
        rects = self.cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        height, width = image_bgr.shape[:2]
        found = []
        for x, y, w, h in rects:
            box = clip_box(x * fx, y * fy, w * fx, h * fy, width, height)
            if box is not None:
                found.append(Detection(box, 1.0))
        found.sort(key=lambda d: d.box[2] * d.box[3], reverse=True)  # largest (nearest) first
        return found
