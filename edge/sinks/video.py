"""--save-video OUT.mp4: every frame, annotated (edge/overlay.py), as a video at the source's frame rate.

Off by default: no image of anyone is stored unless the user asks for it. Every frame the loop
processes is written, with faces or without, the overlay drawn on a copy. The container follows the
name: `.mp4` / `.m4v` / `.mov` (MPEG-4 Part 2, fourcc mp4v: OpenCV's pip wheels carry no H.264
encoder), `.avi` (MJPG). The writer is tried when the sink is built, so a folder that cannot be
written or a codec this OpenCV lacks is one line at start (exit 3), not a surprise at the end.

Timing: the video plays at the source's frame rate (`attach_source_fps`, from the run; 30 when the
source does not say). A video file's frames are written once each, so the result is as long as the
clip however fast it was processed. A live source (camera, stream) drops frames when the loop is
slower than the camera; each frame is then repeated until the next one is due by its timestamp, so
the video keeps the real pace (a gap longer than MAX_FILL_S is cut to that). A photo is held for
STILL_S seconds. All frames take the size of the first: another size (photos of a folder) is scaled
to fit, centred on black.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..overlay import draw_overlay
from ..records import FrameResult
from . import Sink

log = logging.getLogger(__name__)

#: file suffix -> fourcc
CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
#: frame rate when the source states none
DEFAULT_FPS = 30.0
#: seconds a photo (Frame.still) is shown
STILL_S = 1.0
#: a live source's gap is filled with the last frame for at most this many seconds
MAX_FILL_S = 5.0


def fit_into(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to fit (width, height), centred on black; itself when it already has that size."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return canvas


class VideoSink(Sink):
    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        super().__init__()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CODECS:
            raise ConfigError(f"--save-video {self.path}: unknown video type {suffix or '(none)'!r} "
                              f"(use {', '.join(sorted(CODECS))})")
        self.fourcc = CODECS[suffix]
        self.fps = float(fps) if fps else DEFAULT_FPS
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--save-video {self.path}: cannot create {self.path.parent}: "
                              f"{exc.strerror or exc}") from None
        if self.path.is_dir():
            raise ConfigError(f"--save-video {self.path}: is a folder, give a file name")
        # try the writer now (a small frame), so a codec or folder problem is reported before the run
        probe = self._open(64, 48)
        probe.release()
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._t0: float | None = None  # a live source: the first frame's timestamp
        self._written = 0
        self.stats = {"frames": 0, "written": 0}

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not writer.isOpened():
            writer.release()
            why = "the folder is not writable" if not os.access(self.path.parent, os.W_OK) else \
                f"this OpenCV cannot encode {self.fourcc} into {self.path.suffix}"
            raise ConfigError(f"--save-video {self.path}: cannot open a video writer ({why})")
        return writer

    def attach_source_fps(self, fps: float | None) -> None:
        """The source's frame rate (the run calls this before the first frame)."""
        if self._writer is None and fps:
            self.fps = float(fps)

    def _copies(self, result: FrameResult) -> int:
        frame = result.frame
        if frame.still:
            return max(1, int(round(STILL_S * self.fps)))
        if frame.pts is not None or frame.file:
            return 1  # a file: every frame once, at its own rate
        if self._t0 is None:
            self._t0 = frame.timestamp
        due = int((frame.timestamp - self._t0) * self.fps) + 1  # frames that should exist by now
        return max(1, min(due - self._written, int(MAX_FILL_S * self.fps)))

    def write(self, result: FrameResult) -> None:
        image = draw_overlay(result.frame.image, result)
        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            self._writer = self._open(*self._size)
            log.info("save-video: writing %s (%dx%d, %g fps, %s)", self.path, *self._size, self.fps, self.fourcc)
        image = fit_into(image, *self._size)
        copies = self._copies(result)
        for _ in range(copies):
            self._writer.write(image)
        self._written += copies
        if self._t0 is not None:  # a long gap was cut: go on from here
            self._written = max(self._written, int((result.frame.timestamp - self._t0) * self.fps) + 1)
        self.stats["frames"] += 1
        self.stats["written"] += copies

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            log.info("save-video: %s: %d frames (%d processed)", self.path, self.stats["written"], self.stats["frames"])
        elif self.path.is_file() and self.path.stat().st_size < 4096:
            self.path.unlink()  # only the probe: no frame ever came

    def __repr__(self) -> str:
        return f"VideoSink({str(self.path)!r}, fps={self.fps:g})"
