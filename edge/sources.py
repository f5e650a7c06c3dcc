"""Video sources: USB/V4L2 camera, Raspberry Pi camera (picamera2), stream URL, video file, image(s).

Every source is an iterable of `Frame(index, image, timestamp, source)` with BGR uint8 images, and
has `stop()` (safe from a signal handler), `close()` and `stats()` (frames delivered, dropped,
corrupt, reconnects).

Two kinds, chosen by what is behind the source:

* **Live** (camera, picamera2, rtsp:// / http:// streams): a grabber thread reads as fast as the
  device delivers and keeps only the LATEST frame. A slow pipeline therefore never builds up lag; it
  skips frames instead, and counts them as `dropped`. A device is *lost* when its reads fail
  (FAILED_READS_BEFORE_RECONNECT in a row) or when it delivers no good frame for `frame_timeout_s`
  (a stream that opens but never decodes, a camera or MJPEG stream that stalls with the connection
  open). A lost device is reopened with exponential backoff (each attempt logged); the
  `max_reconnect_s` budget runs from the moment it was lost and is not reset by a reopening that
  brings no frame, so after at most frame_timeout_s + max_reconnect_s without a frame the
  iteration raises SourceError (exit 4). The consumer enforces the same bound even when the
  grabber is stuck inside a read. Streams are opened with ffmpeg open/read timeouts of
  frame_timeout_s, so a stalled connection does not block a read for ffmpeg's default 30 s.
* **Files** (video file, one image, a folder in sorted name order): read frame by frame, nothing
  dropped; `loop=True` replays them forever (soak tests). Every frame carries its file's name
  (`Frame.file`, logged with each event); a video file's frames carry their video time (`Frame.pts`).
* **Photos** (one image, or a folder): each photo is an independent still (`Frame.still`): the loop
  forgets every face before it (tracker, smoother), so nothing carries over from one photo to the
  next, and face IDs count from 1 in each. Videos in the folder (VIDEO_SUFFIXES) are played as
  videos, one after the other, each starting afresh too. Any other file in the folder is named in
  one warning and counted (`stats()["skipped"]`, in the run's final line); sub-folders are not
  searched.

A corrupt frame (None, empty, wrong number of channels, or a size that differs from the stream's
first frame) is skipped and counted as `corrupt`; it never reaches the detector. In a video file a
frame that cannot be decoded (a damaged packet: the read fails) is skipped and counted too; the
file ends only at its real end (the read position reaches the container's frame count), or after
MAX_BAD_READS failed reads in a row (a damaged tail, or a file whose frame count is unknown).

The frame `index` counts frames the source delivered to the loop (0, 1, 2, ...).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

# ffmpeg (OpenCV's stream/file backend) prints connection errors straight to stderr; keep them
# out of a one-line error (the SourceError says what failed). Read when the backend first starts.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .config import SourceConfig  # noqa: E402
from .errors import ConfigError, SourceError  # noqa: E402
from .records import Frame  # noqa: E402

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
#: files in a folder source that are played as videos (anything else that is not an image is skipped)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".3gp"})
#: file names a folder source lists in its warning at most (then "and N more")
MAX_NAMED = 20
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")

#: consecutive failed reads of a live device before it is considered lost and reopened
FAILED_READS_BEFORE_RECONNECT = 3
#: reconnect backoff: first wait, growth factor, longest wait (seconds)
BACKOFF_START_S = 0.25
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 8.0
#: a video file ends after this many failed reads in a row before its known end (see module doc)
MAX_BAD_READS = 50
#: the consumer's bound on a live source: no frame for frame_timeout_s + max_reconnect_s + this
STALL_GRACE_S = 2.0


def is_stream_url(path: str) -> bool:
    return path.lower().startswith(STREAM_SCHEMES)


#: OpenCV's log levels (0 silent, 2 error). Where the setter lives depends on the wheel:
#: cv2.utils.logging in 4.12+, cv2.setLogLevel in 4.11 (the Raspberry Pi pin) and older.
OPENCV_LOG_SILENT, OPENCV_LOG_ERROR = 0, 2
_cv_logging = getattr(getattr(cv2, "utils", None), "logging", None) or cv2


def set_opencv_log_level(level: int) -> int:
    """Set OpenCV's own log level; returns the previous one (works on every OpenCV 4.x wheel)."""
    previous = _cv_logging.getLogLevel()
    _cv_logging.setLogLevel(level)
    return previous


class _quiet_opencv:
    """Silence OpenCV's own WARN/ERROR lines while probing a device (we raise a clear error instead)."""

    def __enter__(self) -> None:
        self._level = set_opencv_log_level(OPENCV_LOG_SILENT)

    def __exit__(self, *exc: object) -> None:
        set_opencv_log_level(self._level)


def as_bgr(image: np.ndarray | None, expect_shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """A valid BGR uint8 frame, or None if `image` is corrupt (None, empty, odd shape or size).

    Gray and BGRA frames (some cameras) are converted; `expect_shape` rejects frames whose size
    changed mid-stream (a torn or garbled frame).
    """
    if image is None or not isinstance(image, np.ndarray) or image.size == 0 or image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim != 3:
        return None
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        return None
    if expect_shape is not None and image.shape != expect_shape:
        return None
    return image


# --------------------------------------------------------------------------- device readers
class Reader:
    """The device layer under a source: open() raises SourceError; read() -> (ok, bgr, gray)."""

    name = "source"

    def open(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self) -> tuple[bool, np.ndarray | None, np.ndarray | None]:  # pragma: no cover - interface
        raise NotImplementedError

    def release(self) -> None:
        pass

    def frame_rate(self) -> float | None:
        """Frames per second the device delivers (None when unknown)."""
        return None


class CaptureReader(Reader):
    """cv2.VideoCapture on a camera index, a stream URL or a video file."""

    def __init__(self, target: int | str, name: str, width: int = 0, height: int = 0, fps: float = 0.0,
                 timeout_s: float = 0.0) -> None:
        self.target = target
        self.name = name
        self.width, self.height, self.fps = width, height, fps
        self.timeout_s = float(timeout_s)  # stream URLs: ffmpeg's open and read timeouts (0 = its own)
        self.cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        self.release()
        is_camera = isinstance(self.target, int)
        with _quiet_opencv():
            if isinstance(self.target, str) and is_stream_url(self.target) and self.timeout_s > 0:
                ms = max(1, int(self.timeout_s * 1000))
                cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
            else:
                cap = cv2.VideoCapture(self.target)
            opened = cap.isOpened()
        if not opened:
            cap.release()
            if is_camera:
                reason = f"no such device or it is busy (check /dev/video{self.target} exists and you are in the 'video' group)"
            elif isinstance(self.target, str) and is_stream_url(self.target):
                reason = "the stream did not answer (check the URL, the network and the credentials)"
            else:
                reason = "not a video OpenCV can decode"
            raise SourceError(f"cannot open {self.name}: {reason}")
        if is_camera:
            if self.width and self.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # V4L2: keep the driver queue short (less lag)
        self.cap = cap

    def read(self) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
        if self.cap is None:
            return False, None, None
        ok, image = self.cap.read()
        return bool(ok), image, None

    def frame_rate(self) -> float | None:
        """The frame rate the device or container states (None when it does not say)."""
        get = getattr(self.cap, "get", None)
        if get is not None:
            try:
                rate = float(get(cv2.CAP_PROP_FPS) or 0.0)
            except (cv2.error, TypeError, ValueError):
                rate = 0.0
            if 0 < rate < 1000:
                return rate
        return float(self.fps) if self.fps else None

    def position(self) -> tuple[int, int]:
        """A file's (next frame index, frame count); the count is 0 when the container does not say."""
        if self.cap is None:
            return 0, 0
        return int(self.cap.get(cv2.CAP_PROP_POS_FRAMES)), max(0, int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class PicameraReader(Reader):
    """Raspberry Pi camera through picamera2 (libcamera), imported only when used.

    The main stream is "RGB888", which picamera2 stores per pixel as [B, G, R] (its manual's
    format table) -- exactly OpenCV's BGR order, so no conversion is needed. ("BGR888" would give
    [R, G, B] and need one.) An optional "YUV420" lores stream gives a small image whose first
    `height` rows are the luma (Y) plane: a free grayscale frame for the face detector, which then
    does not have to convert and downscale the main image itself.
    """

    name = "picamera"

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.camera = None
        self.lores = bool(cfg.lores_width and cfg.lores_height)

    def open(self) -> None:
        self.release()
        try:
            from picamera2 import Picamera2  # noqa: PLC0415 - only on a Pi, only when asked for
        except ImportError as exc:
            raise SourceError(
                "cannot open picamera: the picamera2 package is not importable "
                f"({exc}); on Raspberry Pi OS: sudo apt install python3-picamera2, and create the venv "
                "with --system-site-packages"
            ) from None
        cfg = self.cfg
        camera = None
        try:
            camera = Picamera2()
            streams = {"main": {"size": (int(cfg.width), int(cfg.height)), "format": "RGB888"}}
            if self.lores:
                streams["lores"] = {"size": (int(cfg.lores_width), int(cfg.lores_height)), "format": "YUV420"}
            controls = {"FrameRate": float(cfg.fps)} if cfg.fps else {}
            config = camera.create_video_configuration(**streams, controls=controls)
            camera.configure(config)
            camera.start()
        except Exception as exc:  # noqa: BLE001 - picamera2 raises RuntimeError, IndexError, ...
            if camera is not None:
                try:
                    camera.close()
                except Exception:  # noqa: BLE001
                    pass
            raise SourceError(f"cannot open picamera: {exc}") from None
        self.camera = camera

    def frame_rate(self) -> float | None:
        return float(self.cfg.fps) if self.cfg.fps else None

    def read(self) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
        camera = self.camera
        if camera is None:
            return False, None, None
        try:
            if self.lores:
                if hasattr(camera, "capture_arrays"):  # both streams from the same request
                    (main, lores), _ = camera.capture_arrays(["main", "lores"])
                else:
                    main, lores = camera.capture_array("main"), camera.capture_array("lores")
            else:
                main, lores = camera.capture_array("main"), None
        except Exception:  # noqa: BLE001 - a failed capture is a failed read; the source reconnects
            return False, None, None
        gray = None
        if lores is not None and lores.ndim == 2:
            gray = lores[: int(self.cfg.lores_height), : int(self.cfg.lores_width)]  # the Y plane
        if main is not None and main.ndim == 3 and main.shape[1] > int(self.cfg.width):
            main = main[:, : int(self.cfg.width)]  # drop row padding, if any
        return True, main, gray

    def release(self) -> None:
        camera, self.camera = self.camera, None
        if camera is not None:
            for method in ("stop", "close"):
                try:
                    getattr(camera, method)()
                except Exception:  # noqa: BLE001 - releasing a dead camera must not mask the real error
                    pass


# --------------------------------------------------------------------------- sources
class Source:
    """Base: iterate for frames; `stop()` ends the iteration soon; `close()` releases the device."""

    live = False
    #: frames per second of the source (a file's container, a camera's setting); None when unknown
    fps: float | None = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.delivered = 0
        self.dropped = 0
        self.corrupt = 0
        self.reconnects = 0
        self._stop = threading.Event()
        #: called about 4 times a second while a live source waits for a frame (watchdog pings)
        self.on_idle: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the iteration to end after the current frame. Safe from a signal handler."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        return {"delivered": self.delivered, "dropped": self.dropped, "corrupt": self.corrupt,
                "reconnects": self.reconnects}

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class LiveSource(Source):
    """A device read by a grabber thread that keeps only the newest frame (see module doc)."""

    live = True

    def __init__(self, reader: Reader, reconnect: bool = True, max_reconnect_s: float = 30.0,
                 frame_timeout_s: float = 10.0) -> None:
        super().__init__(reader.name)
        self.reader = reader
        self.reconnect = reconnect
        self.max_reconnect_s = float(max_reconnect_s)
        self.frame_timeout_s = float(frame_timeout_s)
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, np.ndarray | None, float] | None = None
        self._error: SourceError | None = None
        self._ended = False
        self._shape: tuple[int, ...] | None = None
        self._lost_since: float | None = None  # when the device was found lost; None while frames come
        self._delay = BACKOFF_START_S  # next reconnect wait; grows until a frame arrives again
        self._attempts = 0
        reader.open()  # SourceError: "cannot open camera 0: ..."
        rate = getattr(reader, "frame_rate", None)
        self.fps = rate() if rate is not None else None
        self._last_good = self._last_open = time.monotonic()
        self._thread = threading.Thread(target=self._grab_loop, name=f"grab-{self.name}", daemon=True)
        self._thread.start()

    # ---- grabber thread
    def _grab_loop(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                ok, image, gray = self.reader.read()
                if ok:
                    failures = 0
                    image = as_bgr(image, self._shape)
                    if image is None:
                        self.corrupt += 1
                else:
                    failures += 1
                if not ok or image is None:
                    since = max(self._last_good, self._last_open)
                    if time.monotonic() - since >= self.frame_timeout_s:
                        failures = 0
                        if not self._reopen(f"no frame for {self.frame_timeout_s:g}s"):
                            return
                    elif failures >= FAILED_READS_BEFORE_RECONNECT:
                        failures = 0
                        if not self._reopen("reads failed"):
                            return
                    continue
                self._last_good = time.monotonic()
                if self._lost_since is not None:
                    log.warning("%s: frames again after %.1fs", self.name, self._last_good - self._lost_since)
                    self._lost_since, self._delay, self._attempts = None, BACKOFF_START_S, 0
                if self._shape is None:
                    self._shape = image.shape
                now = time.time()
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1  # the loop never saw the previous one
                    self._latest = (image, gray, now)
                    self._cond.notify()
        except Exception as exc:  # noqa: BLE001 - a crash of the grabber must end the run, not hang it
            log.exception("%s: grabber thread failed", self.name)
            self._fail(SourceError(f"{self.name}: grabber failed: {exc}"))
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _reopen(self, why: str) -> bool:
        """Reopen a lost device with exponential backoff; False (and an error set) when giving up.

        The budget (max_reconnect_s) and the backoff run from when the device was first lost and
        carry over a reopening that brings no frame: only a good frame resets them."""
        self.reader.release()
        if not self.reconnect:
            self._fail(SourceError(f"{self.name} was lost ({why}) and reconnect is off"))
            return False
        if self._lost_since is None:
            self._lost_since = time.monotonic()
        deadline = self._lost_since + self.max_reconnect_s
        last = why
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            delay = min(self._delay, remaining)
            self._attempts += 1
            log.warning("%s lost (%s); reconnect attempt %d in %.2fs", self.name, last, self._attempts, delay)
            if self._stop.wait(delay):
                return False
            self._delay = min(self._delay * BACKOFF_FACTOR, BACKOFF_MAX_S)
            try:
                self.reader.open()
            except SourceError as exc:
                last = str(exc)
                continue
            self.reconnects += 1
            self._last_open = time.monotonic()
            log.warning("%s reconnected after %d attempt(s), %.1fs", self.name, self._attempts,
                        self._last_open - self._lost_since)
            return True
        if self._stop.is_set():
            return False
        self._fail(SourceError(
            f"{self.name} was lost and could not be reopened within {self.max_reconnect_s:g}s "
            f"({self._attempts} attempts; last: {last})"
        ))
        return False

    def _fail(self, error: SourceError) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    # ---- consumer (the loop's thread)
    def __iter__(self) -> Iterator[Frame]:
        cond = self._cond
        limit = self.frame_timeout_s + (self.max_reconnect_s if self.reconnect else 0.0) + STALL_GRACE_S
        while True:
            with cond:
                waiting = self._latest is None and self._error is None and not self._ended
                if waiting and not self._stop.is_set():
                    cond.wait(0.25)
                    waiting = self._latest is None and self._error is None and not self._ended
                if self._stop.is_set():
                    return
                if waiting and time.monotonic() - self._last_good > limit:
                    # the grabber is stuck inside a read that does not return: give up from here
                    raise SourceError(f"{self.name} delivered no frame for {limit:g}s (stalled) and was given up")
                if waiting:
                    item = None
                elif self._latest is None:
                    if self._error is not None:
                        raise self._error
                    return  # grabber ended without error (stopped)
                else:
                    item, self._latest = self._latest, None
            if item is None:  # still waiting: outside the lock, let the loop ping its watchdog
                if self.on_idle is not None:
                    self.on_idle()
                continue
            image, gray, timestamp = item
            frame = Frame(self.delivered, image, timestamp, self.name, gray)
            self.delivered += 1
            yield frame

    def close(self) -> None:
        self.stop()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if self._thread.is_alive():  # stuck in a read: releasing under it could crash the process
            log.warning("%s: the grabber is still inside a read; leaving the device to the process exit", self.name)
            return
        self.reader.release()


class VideoFileSource(Source):
    """A video file read frame by frame (nothing dropped); `loop` replays it from the start."""

    def __init__(self, path: str, loop: bool = False) -> None:
        super().__init__(path)
        self.loop = loop
        self.reader = CaptureReader(path, name=path)
        self.reader.open()
        self.fps = self.reader.frame_rate()

    def __iter__(self) -> Iterator[Frame]:
        shape = None
        bad = 0  # failed reads in a row
        this_pass = 0  # frames delivered since the file was (re)opened
        consumed = 0  # frames read or skipped since then (a failed read skips one)
        while not self._stop.is_set():
            ok, image, _ = self.reader.read()
            if not ok:
                position, count = self.reader.position()
                at_end = bool(count) and (position >= count or consumed >= count)
                if not at_end and bad + 1 < MAX_BAD_READS:
                    bad += 1
                    consumed += 1
                    continue  # a damaged frame: skip it (counted once a good frame, or the end, follows)
                if bad or not at_end:
                    self.corrupt += bad + (0 if at_end else 1)
                    if at_end:
                        log.warning("%s: skipped %d unreadable frame(s) before its end", self.name, bad)
                    else:
                        log.warning("%s: %d unreadable frames in a row at frame %d of %s: treating it as the end",
                                    self.name, bad + 1, consumed, count or "an unknown number")
                bad = 0
                if self.loop and this_pass > 0:
                    self.reader.open()  # rewinding by reopening works for every container
                    this_pass = consumed = 0
                    continue
                return
            consumed += 1
            if bad:
                self.corrupt += bad
                log.warning("%s: skipped %d unreadable frame(s) before frame %d", self.name, bad, consumed - 1)
                bad = 0
            image = as_bgr(image, shape)
            if image is None:
                self.corrupt += 1
                continue
            shape = image.shape
            pts = (consumed - 1) / self.fps if self.fps else None
            frame = Frame(self.delivered, image, time.time(), self.name, file=self.name, pts=pts)
            self.delivered += 1
            this_pass += 1
            yield frame

    def close(self) -> None:
        self.stop()
        self.reader.release()


class ImageSource(Source):
    """Photos: one image, or a folder's images (and videos) in sorted name order; `loop` replays them.

    Each image is delivered as an independent still (Frame.still, Frame.file); a video among the
    paths is played frame by frame (VideoFileSource) with its own file name; one that cannot be
    opened is skipped with a warning and counted as `corrupt`, like an unreadable image. `skipped`
    names the folder's other files (not images or videos), counted in stats().
    """

    def __init__(self, paths: list[Path], name: str, loop: bool = False, skipped: list[Path] | tuple = ()) -> None:
        super().__init__(name)
        if not paths:
            extra = f" ({len(skipped)} other file(s) skipped)" if skipped else ""
            raise SourceError(f"cannot open {name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                              f"or videos in it{extra}")
        self.paths = paths
        self.loop = loop
        self.skipped = list(skipped)
        self._video: VideoFileSource | None = None
        self.fps = 1.0  # a slideshow: one photo a second (the overlay video), or the first video's rate
        for path in paths:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                try:
                    with _quiet_opencv():
                        cap = cv2.VideoCapture(str(path))
                        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
                        cap.release()
                except cv2.error:
                    rate = 0.0
                if 0 < rate < 1000:
                    self.fps = rate
                    break
        if self.skipped:
            names = ", ".join(p.name for p in self.skipped[:MAX_NAMED])
            more = f" and {len(self.skipped) - MAX_NAMED} more" if len(self.skipped) > MAX_NAMED else ""
            log.warning("%s: skipping %d file(s) that are not images or videos: %s%s", name, len(self.skipped),
                        names, more)

    def __iter__(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            good = 0
            for path in self.paths:
                if self._stop.is_set():
                    return
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    for frame in self._play(path):
                        good += 1
                        yield frame
                    continue
                image = as_bgr(cv2.imread(str(path), cv2.IMREAD_COLOR))
                if image is None:
                    self.corrupt += 1
                    log.warning("skipping %s: not a readable image", path)
                    continue
                good += 1
                frame = Frame(self.delivered, image, time.time(), str(path), file=str(path), still=True)
                self.delivered += 1
                yield frame
            if not self.loop or good == 0:
                return

    def _play(self, path: Path) -> Iterator[Frame]:
        """A video of the folder, frame by frame, numbered on from the photos before it."""
        try:
            video = VideoFileSource(str(path))
        except SourceError as exc:
            self.corrupt += 1
            log.warning("skipping %s: %s", path, exc)
            return
        self._video = video
        try:
            for frame in video:
                if self._stop.is_set():
                    return
                frame.index = self.delivered
                self.delivered += 1
                yield frame
        finally:
            self.corrupt += video.corrupt
            self._video = None
            video.close()

    def stop(self) -> None:
        super().stop()
        video = self._video
        if video is not None:
            video.stop()

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "skipped": len(self.skipped)}


def open_source(cfg: SourceConfig) -> Source:
    """The source a SourceConfig names (exactly one of camera, picamera, path)."""
    given = [what for what, on in (("camera", cfg.camera is not None), ("picamera", cfg.picamera),
                                   ("path", bool(cfg.path))) if on]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one source: --camera N, --picamera or --source PATH|URL"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if cfg.camera is not None:
        reader: Reader = CaptureReader(int(cfg.camera), f"camera {int(cfg.camera)}", cfg.width, cfg.height, cfg.fps)
        return LiveSource(reader, cfg.reconnect, cfg.max_reconnect_s, cfg.frame_timeout_s)
    if cfg.picamera:
        return LiveSource(PicameraReader(cfg), cfg.reconnect, cfg.max_reconnect_s, cfg.frame_timeout_s)
    path = str(cfg.path)
    if is_stream_url(path):
        return LiveSource(CaptureReader(path, path, timeout_s=cfg.frame_timeout_s), cfg.reconnect,
                          cfg.max_reconnect_s, cfg.frame_timeout_s)
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.is_file())
        media = [q for q in files if q.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        skipped = [q for q in files if q.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        return ImageSource(media, str(p), cfg.loop, skipped=skipped)
    if not p.exists():
        raise SourceError(f"cannot open {path}: no such file or folder")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([p], str(p), cfg.loop)
    return VideoFileSource(str(p), cfg.loop)


def describe_source(cfg: SourceConfig) -> str:
    if cfg.camera is not None:
        return f"camera {cfg.camera} ({cfg.width}x{cfg.height} @ {cfg.fps:g} fps)"
    if cfg.picamera:
        lores = f", lores {cfg.lores_width}x{cfg.lores_height}" if cfg.lores_width and cfg.lores_height else ""
        return f"picamera ({cfg.width}x{cfg.height} @ {cfg.fps:g} fps{lores})"
    return f"{cfg.path}{' (looping)' if cfg.loop else ''}"
