"""--save-frames DIR: keep annotated JPEGs of frames with faces, at most one per `every_s` seconds.

Off by default: no image of anyone is stored unless the user asks for it. Only frames that have at
least one face are saved, the overlay drawn on a copy (the frame itself is not touched), and never
more often than once per `every_s` seconds of video time: a video file's own time (Frame.pts, its
frame number over its frame rate, however fast it is processed), a live source's clock
(frame.timestamp). Every photo of a photo folder is saved (each is its own moment), and a new file,
or a file played again, starts afresh. (The whole annotated video: --save-video.) Names sort by time:

    DIR/frame_00001234_20261121T140307.123+0100.jpg    (frame index, local time with its offset)
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import cv2

from ..errors import ConfigError
from ..overlay import draw_overlay
from ..records import FrameResult
from . import Sink


class FrameSaverSink(Sink):
    def __init__(self, folder: str | os.PathLike, every_s: float = 1.0, quality: int = 90):
        super().__init__()
        self.folder = Path(folder)
        self.every_s = max(0.0, float(every_s))
        self._params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]
        self._last: float | None = None  # video time of the last saved frame
        self._file: str | None = None  # ... and its file
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--save-frames: cannot create {self.folder}: {exc.strerror or exc}") from None
        if not os.access(self.folder, os.W_OK):
            raise ConfigError(f"--save-frames: {self.folder} is not writable")
        self.stats = {"saved": 0, "failed": 0}

    def write(self, result: FrameResult) -> None:
        if not result.faces:
            return
        frame = result.frame
        ts = frame.timestamp
        t = frame.pts if frame.pts is not None else ts
        if (self._last is not None and not frame.still and frame.file == self._file
                and 0 <= t - self._last < self.every_s):
            return
        self._last, self._file = t, frame.file
        when = _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).astimezone()
        name = f"frame_{result.frame.index:08d}_{when.strftime('%Y%m%dT%H%M%S')}.{when.microsecond // 1000:03d}" \
               f"{when.strftime('%z')}.jpg"
        if cv2.imwrite(str(self.folder / name), draw_overlay(result.frame.image, result), self._params):
            self.stats["saved"] += 1
        else:
            self.stats["failed"] += 1

    def __repr__(self) -> str:
        return f"FrameSaverSink({str(self.folder)!r}, every_s={self.every_s})"
