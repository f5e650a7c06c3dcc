"""Sources: files frame by frame, live devices through the latest-frame grabber, reconnects, corrupt frames."""
from __future__ import annotations

import logging
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from fer_edge import sources
from fer_edge.config import SourceConfig
from fer_edge.errors import ConfigError, SourceError
from fer_edge.sources import LiveSource, Reader, open_source

from .conftest import background, write_video


def numbered_frame(i: int, shape=(48, 64, 3)) -> np.ndarray:
    frame = np.zeros(shape, np.uint8)
    frame[0, 0, 0] = i % 256
    frame[0, 1, 0] = i // 256
    return frame


def frame_number(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) + 256 * int(image[0, 1, 0])


class ScriptedReader(Reader):
    """A device whose reads follow a script: an image, None (corrupt), or False (a failed read)."""

    def __init__(self, script, delay: float = 0.002, reopen_ok: bool = True) -> None:
        self.name = "scripted"
        self.script = list(script)
        self.delay = delay
        self.reopen_ok = reopen_ok
        self.opens = 0
        self.pos = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens > 1 and not self.reopen_ok:
            raise SourceError("cannot open scripted: gone")

    def read(self):
        time.sleep(self.delay)
        if self.pos >= len(self.script):
            return False, None, None
        item = self.script[self.pos]
        self.pos += 1
        if item is False:
            return False, None, None
        return True, item, None


# --------------------------------------------------------------------------- files
def test_video_file_is_read_frame_by_frame_without_drops(tmp_path):
    frames = [np.zeros((96, 128, 3), np.uint8) for _ in range(20)]
    for i, f in enumerate(frames):  # frame i has a bar 6 * (i + 1) px wide: survives MJPG compression
        f[:, : 6 * (i + 1)] = 200
    path = write_video(tmp_path / "n.avi", frames)
    with open_source(SourceConfig(path=str(path))) as src:
        got = list(src)
    assert [f.index for f in got] == list(range(20))
    widths = [int((f.image[50, :, 0] > 100).sum()) for f in got]
    assert widths == sorted(widths) and abs(widths[-1] - 120) <= 4  # in order, the last is the last
    assert src.stats() == {"delivered": 20, "dropped": 0, "corrupt": 0, "reconnects": 0}


def test_loop_replays_a_file(tmp_path):
    path = write_video(tmp_path / "n.avi", [background(64, 48)] * 5)
    src = open_source(SourceConfig(path=str(path), loop=True))
    got = []
    for frame in src:
        got.append(frame.index)
        if len(got) == 13:
            src.stop()
    src.close()
    assert got == list(range(13))


def test_image_folder_sorted_and_unreadable_skipped(tmp_path):
    for name, value in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), value, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(SourceConfig(path=str(tmp_path)))
    got = list(src)
    assert [int(f.image[0, 0, 0]) for f in got] == [10, 20, 30]
    assert src.corrupt == 1


def test_single_image(tmp_path):
    cv2.imwrite(str(tmp_path / "one.png"), np.full((8, 8), 77, np.uint8))  # gray on disk -> BGR
    got = list(open_source(SourceConfig(path=str(tmp_path / "one.png"))))
    assert len(got) == 1 and got[0].image.shape == (8, 8, 3)


def test_missing_path_and_bad_video(tmp_path):
    with pytest.raises(SourceError, match="cannot open .*nope.mp4: no such file"):
        open_source(SourceConfig(path=str(tmp_path / "nope.mp4")))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SourceError, match="cannot open"):
        open_source(SourceConfig(path=str(bad)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(SourceConfig(path=str(tmp_path / "empty")))


def test_exactly_one_source_required():
    with pytest.raises(ConfigError, match="exactly one source"):
        open_source(SourceConfig())
    with pytest.raises(ConfigError, match="got camera, path"):
        open_source(SourceConfig(camera=0, path="x.mp4"))


# --------------------------------------------------------------------------- cameras
def test_camera_that_cannot_open_says_so_in_one_line():
    with pytest.raises(SourceError) as info:
        open_source(SourceConfig(camera=63))
    message = str(info.value)
    assert message.startswith("cannot open camera 63: ") and "\n" not in message


class FakeCapture:
    """cv2.VideoCapture stand-in: delivers `frames_per_open` frames per opening, then fails."""

    opens = 0
    frames_per_open = 5
    max_good_opens = 1

    def __init__(self, target, *args):
        type(self).opens += 1
        self.opened = type(self).opens <= type(self).max_good_opens
        self.n = 0
        self.props = {}

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def read(self):
        time.sleep(0.003)
        if not self.opened or self.n >= self.frames_per_open:
            return False, None
        self.n += 1
        return True, numbered_frame(self.n)

    def release(self):
        self.opened = False


@pytest.fixture
def fake_capture(monkeypatch):
    cls = type("Capture", (FakeCapture,), {"opens": 0})
    monkeypatch.setattr(sources.cv2, "VideoCapture", cls)
    monkeypatch.setattr(sources, "BACKOFF_START_S", 0.05)
    return cls


def test_camera_lost_mid_run_reconnects_then_gives_up(fake_capture, caplog):
    fake_capture.max_good_opens = 1  # the camera never comes back
    caplog.set_level(logging.WARNING, logger="fer_edge.sources")
    src = open_source(SourceConfig(camera=0, max_reconnect_s=0.6))
    got = []
    with pytest.raises(SourceError, match=r"camera 0 was lost and could not be reopened within 0.6s"):
        for frame in src:
            got.append(frame)
    src.close()
    assert 1 <= len(got) <= 5  # latest-frame source: it may skip, never invent
    attempts = [r.getMessage() for r in caplog.records if "reconnect attempt" in r.getMessage()]
    assert len(attempts) >= 2  # logged, with growing delays
    assert "attempt 1 in 0.05s" in attempts[0] and "attempt 2 in 0.10s" in attempts[1]
    assert src.reconnects == 0 and fake_capture.opens >= 3


def test_camera_lost_mid_run_comes_back(fake_capture, caplog):
    fake_capture.max_good_opens = 2  # the second opening works: the stream goes on
    caplog.set_level(logging.WARNING, logger="fer_edge.sources")
    src = open_source(SourceConfig(camera=0, max_reconnect_s=5))
    got = []
    for frame in src:
        got.append(frame)
        if len(got) == 7:
            break
    src.close()
    assert src.reconnects == 1
    assert any("reconnected" in r.getMessage() for r in caplog.records)
    assert [f.index for f in got] == list(range(7))


def test_reconnect_off_fails_at_once():
    src = LiveSource(ScriptedReader([numbered_frame(1), False, False, False]), reconnect=False)
    with pytest.raises(SourceError, match="lost .*reconnect is off"):
        list(src)
    src.close()


def test_corrupt_frames_are_skipped_and_counted():
    good = [numbered_frame(i) for i in range(6)]
    script = [good[0], None, good[1], np.zeros((0, 0, 3), np.uint8), good[2],
              np.zeros((48, 64, 5), np.uint8), good[3], np.zeros((10, 10, 3), np.uint8),  # wrong size
              np.zeros((48, 64, 3), np.float32), good[4], good[5]]
    reader = ScriptedReader(script, delay=0.02)  # slower than the consumer: nothing dropped
    src = LiveSource(reader, reconnect=False)
    got = []
    with pytest.raises(SourceError):
        for frame in src:
            got.append(frame_number(frame.image))
    src.close()
    assert got == [0, 1, 2, 3, 4, 5]
    assert src.corrupt == 5 and src.dropped == 0


def test_live_source_keeps_only_the_latest_frame():
    reader = ScriptedReader([numbered_frame(i) for i in range(400)], delay=0.001)
    src = LiveSource(reader, reconnect=False)
    got, lags = [], []
    for frame in src:
        got.append(frame_number(frame.image))
        lags.append(time.time() - frame.timestamp)
        time.sleep(0.02)  # a slow pipeline
        if len(got) == 10:
            break
    src.close()
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got[-1] - got[0] > 30  # it skipped ahead instead of queueing
    assert src.dropped > 0
    assert max(lags) < 0.2  # each frame handed over is fresh (a queue would be 10 x 20 ms behind by now)
    assert lags[-1] < 0.1


def test_stop_from_another_thread_ends_a_waiting_live_source():
    class Never(ScriptedReader):
        def read(self):
            time.sleep(0.01)
            return True, None, None  # corrupt forever: the consumer keeps waiting

    src = LiveSource(Never([]), reconnect=False)
    idle = []
    src.on_idle = lambda: idle.append(1)
    threading.Timer(0.6, src.stop).start()
    t0 = time.monotonic()
    assert list(src) == []
    assert time.monotonic() - t0 < 2.0
    assert len(idle) >= 2  # the idle hook (STATUS for systemd; never WATCHDOG=1) ran while waiting
    src.close()


# --------------------------------------------------------------------------- picamera2 (faked)
class FakePicamera2:
    """The part of picamera2's API the source uses, with its array layouts."""

    instances: list["FakePicamera2"] = []

    def __init__(self, camera_num: int = 0):
        self.config = None
        self.started = False
        self.closed = False
        self.count = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, lores=None, controls=None, **kwargs):
        return {"main": dict(main), "lores": dict(lores) if lores else None, "controls": controls or {}}

    def configure(self, config):
        self.config = config

    def start(self):
        self.started = True

    def _array(self, name):
        time.sleep(0.005)
        w, h = self.config[name]["size"]
        if name == "main":  # RGB888: pixels stored [B, G, R]; a pure blue picture
            arr = np.zeros((h, w, 3), np.uint8)
            arr[..., 0] = 255
            return arr
        arr = np.full((h * 3 // 2, w), 128, np.uint8)  # YUV420: h rows of Y, then U and V
        arr[:h] = 60
        return arr

    def capture_array(self, name="main"):
        if not self.started:
            raise RuntimeError("camera not started")
        return self._array(name)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    FakePicamera2.instances = []
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def test_picamera_gives_bgr_main_and_lores_luma(fake_picamera2):
    src = open_source(SourceConfig(picamera=True, width=320, height=240, lores_width=160, lores_height=120, fps=15))
    frame = next(iter(src))
    cam = fake_picamera2.instances[0]
    assert cam.config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert cam.config["lores"] == {"size": (160, 120), "format": "YUV420"}
    assert cam.config["controls"] == {"FrameRate": 15.0}
    assert frame.image.shape == (240, 320, 3)
    assert frame.image[0, 0].tolist() == [255, 0, 0]  # blue stays blue in BGR: no channel swap
    assert frame.gray.shape == (120, 160) and int(frame.gray.max()) == 60  # the Y plane only
    src.close()
    assert cam.closed and not cam.started


def test_picamera_without_lores(fake_picamera2):
    src = open_source(SourceConfig(picamera=True, lores_width=0, lores_height=0))
    frame = next(iter(src))
    assert frame.gray is None and frame.image.shape == (480, 640, 3)
    assert fake_picamera2.instances[0].config["lores"] is None
    src.close()


def test_picamera_missing_or_broken(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(SourceError, match="cannot open picamera: the picamera2 package is not importable"):
        open_source(SourceConfig(picamera=True))
    module = types.ModuleType("picamera2")

    class NoCamera:
        def __init__(self, *a, **k):
            raise IndexError("list index out of range")

    module.Picamera2 = NoCamera
    monkeypatch.setitem(sys.modules, "picamera2", module)
    with pytest.raises(SourceError, match="cannot open picamera: list index out of range"):
        open_source(SourceConfig(picamera=True))


# --------------------------------------------------------------------------- a stream URL
@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server for tmp_path (127.0.0.1 only), torn down after the test."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_stream_is_a_live_source(tmp_path, http_server):
    write_video(tmp_path / "cam.avi", [background(160, 120)] * 30)
    src = open_source(SourceConfig(path=f"{http_server}/cam.avi", max_reconnect_s=0.5))
    assert src.live
    got = []
    for frame in src:
        got.append(frame)
        if len(got) == 3:
            break
    src.close()
    assert [f.index for f in got] == [0, 1, 2] and got[0].image.shape == (120, 160, 3)
    with pytest.raises(SourceError, match=r"cannot open http://127.0.0.1:\d+/missing.avi: the stream did not answer"):
        open_source(SourceConfig(path=f"{http_server}/missing.avi"))
