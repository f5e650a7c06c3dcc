"""Sources in the field: a damaged video file, a stream that opens but never decodes, a stream that
stalls with its connection open, and the watchdog that must not be fed while no frame arrives."""
from __future__ import annotations

import functools
import http.server
import logging
import threading
import time

import numpy as np
import pytest

from fer_edge import sources
from fer_edge.config import RunConfig, SourceConfig
from fer_edge.errors import SourceError
from fer_edge.loop import run
from fer_edge.notify import Notifier
from fer_edge.sources import open_source

from .conftest import background, write_video


def bar_frames(n: int = 60) -> list[np.ndarray]:
    """Frame i has a white bar 2 * (i + 1) px wide: which frame it is survives MJPG compression."""
    frames = []
    for i in range(n):
        f = background(160, 120).copy()
        f[:, : 2 * i + 2] = 255
        frames.append(f)
    return frames


def bar_width(image: np.ndarray) -> int:
    return int((image[60, :, :].min(axis=1) > 200).sum())


def damage(path, frames: tuple[int, ...]) -> None:
    """Overwrite the JPEG data of these frames of an MJPG .avi with noise (the markers stay intact)."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 3) if data[i:i + 3] == b"\xff\xd8\xff"]  # one SOI per frame
    for k in frames:
        s, e = starts[k], (starts[k + 1] if k + 1 < len(starts) else len(data))
        data[s + 2:e - 8] = np.random.default_rng(k).integers(0, 256, e - 8 - s - 2, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- a damaged video file
def test_a_damaged_frame_is_skipped_and_counted_not_the_end_of_the_file(tmp_path, caplog):
    path = write_video(tmp_path / "clip.avi", bar_frames(60))
    damage(path, (20, 21, 22))
    caplog.set_level(logging.WARNING, logger="fer_edge.sources")
    with open_source(SourceConfig(path=str(path))) as src:
        got = list(src)
    assert len(got) == 57, f"stopped after {len(got)} frames"  # before: 20, "end of source"
    widths = [bar_width(f.image) for f in got]
    assert widths == sorted(widths) and widths[-1] >= 116  # in order, and the real last frame came
    assert src.stats()["corrupt"] == 3 and src.stats()["delivered"] == 57
    assert any("skipped 3 unreadable frame(s)" in r.getMessage() for r in caplog.records)


def test_a_damaged_file_loops_whole_and_a_damaged_tail_ends_it(tmp_path, caplog):
    path = write_video(tmp_path / "clip.avi", bar_frames(60))
    damage(path, (20, 21, 22))
    src = open_source(SourceConfig(path=str(path), loop=True))
    got = []
    for frame in src:
        got.append(frame)
        if len(got) == 130:
            break
    src.close()
    assert [f.index for f in got] == list(range(130))  # two whole passes and more: 57 a pass
    assert src.corrupt == 6

    tail = write_video(tmp_path / "tail.avi", bar_frames(60))
    damage(tail, tuple(range(54, 60)))  # the last six frames cannot be decoded
    caplog.set_level(logging.WARNING, logger="fer_edge.sources")
    with open_source(SourceConfig(path=str(tail))) as src:
        got = list(src)
    assert len(got) == 54 and src.corrupt == 6
    assert any("skipped 6 unreadable frame(s) before its end" in r.getMessage() for r in caplog.records)


def test_a_file_that_stops_decoding_ends_after_max_bad_reads(tmp_path, monkeypatch, caplog):
    """No good frame comes back and the container's frame count is not reached: MAX_BAD_READS, then the end."""
    path = write_video(tmp_path / "clip.avi", bar_frames(60))
    monkeypatch.setattr(sources.CaptureReader, "position", lambda self: (0, 10**6))  # a count it never reaches
    monkeypatch.setattr(sources, "MAX_BAD_READS", 7)
    caplog.set_level(logging.WARNING, logger="fer_edge.sources")
    with open_source(SourceConfig(path=str(path))) as src:
        got = list(src)
    assert len(got) == 60 and src.corrupt == 7
    assert any("7 unreadable frames in a row" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- streams
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(tmp_path):
    """serve(handler_class) -> base URL of a 127.0.0.1 HTTP server, shut down after the test."""
    servers = []

    def start(handler=QuietHandler):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path)))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def iterate_for(src, seconds: float):
    """Iterate a source for at most `seconds` (then stop it): (frames, the exception or None, seconds taken)."""
    timer = threading.Timer(seconds, src.stop)
    timer.start()
    got, error, t0 = [], None, time.monotonic()
    try:
        for frame in src:
            got.append(frame)
    except SourceError as exc:
        error = exc
    finally:
        timer.cancel()
        src.close()
    return got, error, time.monotonic() - t0


def test_a_stream_that_opens_but_never_gives_a_frame_is_lost_then_given_up(tmp_path, serve, monkeypatch):
    """An .mp4 over plain HTTP (no range requests): ffmpeg opens it, every read fails."""
    monkeypatch.setattr(sources, "BACKOFF_START_S", 0.05)
    noise = np.random.default_rng(0).integers(0, 256, (40, 240, 320, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", list(noise), fourcc="mp4v")  # MBs: its index (at the end) is out of reach
    url = serve() + "/clip.mp4"
    src = open_source(SourceConfig(path=url, max_reconnect_s=1.0))
    got, error, took = iterate_for(src, 12.0)
    assert got == []
    assert error is not None, "still reconnecting after 12 s (before: forever, never exit 4)"
    assert "could not be reopened within 1s" in str(error) and took < 6.0
    assert error.exit_code == 4


class StallingHandler(QuietHandler):
    """Serves the first part of the file on the first request, then holds every connection open
    without sending another byte (an MJPEG camera that froze)."""

    first = threading.Event()
    prefix = 0

    def do_GET(self):
        data = (self.directory and open(f"{self.directory}/cam.avi", "rb").read()) or b""
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.end_headers()
        if not type(self).first.is_set():
            type(self).first.set()
            self.wfile.write(data[: type(self).prefix])
            self.wfile.flush()
        time.sleep(20)  # the connection stays open, silent


def test_a_stream_that_stalls_with_its_connection_open_is_given_up_in_bounded_time(tmp_path, serve, monkeypatch):
    monkeypatch.setattr(sources, "BACKOFF_START_S", 0.05)
    path = write_video(tmp_path / "cam.avi", bar_frames(60))
    handler = type("Stalling", (StallingHandler,), {"first": threading.Event(), "prefix": path.stat().st_size // 2})
    url = serve(handler) + "/cam.avi"
    src = open_source(SourceConfig(path=url, frame_timeout_s=1.0, max_reconnect_s=1.0))
    got, error, took = iterate_for(src, 20.0)
    assert len(got) >= 1  # it played (latest-frame source: it may skip some), then froze
    assert error is not None, "still waiting after 20 s"
    assert took < 1.0 + 1.0 + sources.STALL_GRACE_S + 8.0  # the bound, plus slack for a busy machine
    assert error.exit_code == 4


# --------------------------------------------------------------------------- the watchdog
class StoppingCapture:
    """A camera that gives 12 frames, then opens again and again but never delivers another."""

    opens = 0

    def __init__(self, target, *args):
        type(self).opens += 1
        self.n = 0 if type(self).opens == 1 else 10**6

    def isOpened(self):
        return True

    def set(self, *args):
        return True

    def read(self):
        time.sleep(0.02)
        self.n += 1
        if self.n > 12:
            return False, None
        return True, np.full((120, 160, 3), 90, np.uint8)

    def release(self):
        pass


class FrameTimes:
    def __init__(self):
        self.times: list[float] = []

    def write(self, result) -> None:
        self.times.append(time.monotonic())

    def close(self) -> None:
        pass


def test_the_watchdog_is_fed_only_while_frames_arrive(tiny_tflite_model, notify_log, monkeypatch):
    address, got = notify_log
    monkeypatch.setattr(sources.cv2, "VideoCapture", type("Cap", (StoppingCapture,), {"opens": 0}))
    monkeypatch.setattr(sources, "BACKOFF_START_S", 0.05)
    cfg = RunConfig()
    cfg.source.camera = 0
    cfg.source.max_reconnect_s = 1.5
    cfg.classifier.model = str(tiny_tflite_model)
    cfg.detector.kind = "haar"
    frames = FrameTimes()
    notifier = Notifier(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "300000"})  # ping every 0.1 s
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="could not be reopened within 1.5s"):
        run(cfg, use_sinks=False, extra_sinks=[frames], notifier=notifier)
    assert time.monotonic() - t0 < 10.0
    time.sleep(0.2)
    assert len(frames.times) >= 5
    last_frame = frames.times[-1]
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    assert pings and pings[0] < last_frame  # fed while frames came
    late = [t - last_frame for t in pings if t > last_frame + 0.5]  # before: one every 0.1 s for 1.5 s
    assert not late, f"WATCHDOG=1 sent {len(late)} times after the last frame (at +{late[:3]} s)"
    assert any(m.startswith("STOPPING=1") for _, m in got)


def test_fer_edge_on_a_stream_without_frames_exits_4_in_one_line(tmp_path, serve, tiny_tflite_model):
    from .test_cli import fer_edge

    noise = np.random.default_rng(0).integers(0, 256, (40, 240, 320, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", list(noise), fourcc="mp4v")
    config = tmp_path / "config.toml"
    config.write_text(f'[source]\npath = "{serve()}/clip.mp4"\nframe_timeout_s = 1.0\nmax_reconnect_s = 1.0\n'
                      f'[classifier]\nmodel = "{tiny_tflite_model}"\n[detector]\nkind = "haar"\n')
    t0 = time.monotonic()
    proc = fer_edge("run", "--config", str(config), "-q", timeout=60)
    assert proc.returncode == 4, proc.stderr  # before: reconnecting forever
    assert time.monotonic() - t0 < 30
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "could not be reopened within 1s" in proc.stderr
