"""The frame loop end to end, in-process: a real face clip, the real detector, a real int8 model."""
from __future__ import annotations

import math
import os
import signal
import socket
import time

import numpy as np
import pytest

from fer_edge import sources
from fer_edge.config import RunConfig
from fer_edge.errors import SourceError
from fer_edge.loop import STAGES, crop_face, run
from fer_edge.notify import Notifier
from fer_edge.records import FrameResult


class RecordingSink:
    def __init__(self, on_write=None) -> None:
        self.results: list[FrameResult] = []
        self.closed = 0
        self.on_write = on_write

    def write(self, result: FrameResult) -> None:
        self.results.append(result)
        if self.on_write:
            self.on_write(self, result)

    def close(self) -> None:
        self.closed += 1


def config(clip_path, model, **log) -> RunConfig:
    cfg = RunConfig()
    cfg.source.path = str(clip_path)
    cfg.classifier.model = str(model)
    for key, value in log.items():
        setattr(cfg.log, key, value)
    return cfg


def quiet() -> Notifier:
    return Notifier(env={})


def test_crop_face_adds_a_margin_and_clips():
    image = np.zeros((100, 200, 3), np.uint8)
    assert crop_face(image, (50, 20, 40, 40), 0.1).shape == (48, 48, 3)
    assert crop_face(image, (0, 0, 40, 40), 0.25).shape == (50, 50, 3)  # clipped at the top-left
    assert crop_face(image, (180, 80, 40, 40), 0.0).shape == (20, 20, 3)


def test_clip_logs_an_event_for_every_frame_with_the_face(face_clip, tiny_tflite_model, tmp_path, read_jsonl):
    log = tmp_path / "events.jsonl"
    rec = RecordingSink()
    cfg = config(face_clip.path, tiny_tflite_model, jsonl=str(log))
    cfg.tracker.min_confidence = cfg.tracker.switch_margin = 0.0  # the label is the argmax (checked below)
    summary = run(cfg, extra_sinks=[rec], notifier=quiet())

    assert summary.frames == len(face_clip.states) and summary.stopped_by == "end of source"
    events = [e for e in read_jsonl(log) if e["type"] == "event"]
    frames = [e["frame"] for e in events]
    full = set(face_clip.frames_where("full"))
    allowed = full | set(face_clip.frames_where("partial"))  # a half-visible head may or may not be found
    assert full <= set(frames) <= allowed
    assert len(frames) == len(set(frames))  # one face, one event per frame
    assert {e["track_id"] for e in events} == {1}  # one stable ID across the whole pass
    for e in events:  # every box is on the head
        hx, hy, hw, hh = face_clip.rects[e["frame"]]
        x, y, w, h = e["box"]
        assert hx <= x + w / 2 <= hx + hw and hy <= y + h / 2 <= hy + hh
        assert sum(e["probs"].values()) == pytest.approx(1.0, abs=2e-3)
        assert e["emotion"] == max(e["probs"], key=e["probs"].get)
    # what the sinks got: every stage timed, faces where the log says
    assert [r.frame.index for r in rec.results] == list(range(len(face_clip.states)))
    for r in rec.results:
        assert set(r.stage_ms) == set(STAGES) and all(v >= 0 for v in r.stage_ms.values())
        # the face is confirmed in its K-th detection pass: its first K-1 frames come with the K-th
        k = cfg.tracker.confirm_frames
        assert (len(r.faces) == 1) == (r.frame.index in frames[k - 1:])
        assert [late.frame.index for late in r.late] == (frames[:k - 1] if r.frame.index == frames[k - 1] else [])
    assert rec.results[-1].fps > 0
    assert rec.closed == 1


def test_detect_every_n_frames_carries_boxes(face_clip, tiny_tflite_model):
    cfg = config(face_clip.path, tiny_tflite_model)
    cfg.detector.every = 4
    calls = []

    def on_ready(pipeline, source):
        detect = pipeline.detector.detect

        def counting(image, gray=None):
            calls.append(source.delivered - 1)
            return detect(image, gray)

        pipeline.detector.detect = counting

    rec = RecordingSink()
    run(cfg, use_sinks=False, extra_sinks=[rec], notifier=quiet(), on_ready=on_ready)
    n = len(face_clip.states)
    assert calls == list(range(0, n, 4)) and len(calls) == math.ceil(n / 4)
    by_frame = {r.frame.index: r for r in rec.results}
    for i in range(n):
        base = by_frame[i - i % 4]
        assert [f.box for f in by_frame[i].faces] == [f.box for f in base.faces]  # reused boxes
        if i % 4:
            assert by_frame[i].stage_ms["detect"] == 0.0 or by_frame[i].stage_ms["detect"] < 1.0
    assert {f.track_id for r in rec.results for f in r.faces} == {1}


def test_max_frames_and_a_sink_asking_to_stop(face_clip, tiny_tflite_model):
    cfg = config(face_clip.path, tiny_tflite_model)
    cfg.max_frames = 5
    summary = run(cfg, use_sinks=False, notifier=quiet())
    assert summary.frames == 5 and summary.stopped_by == "max frames"

    def stop_at_3(sink, result):
        sink.should_stop = result.frame.index >= 2

    rec = RecordingSink(stop_at_3)
    rec.should_stop = False
    summary = run(config(face_clip.path, tiny_tflite_model), use_sinks=False, extra_sinks=[rec], notifier=quiet())
    assert summary.frames == 3 and "RecordingSink asked to stop" in summary.stopped_by


def test_sigterm_stops_the_loop_and_closes_the_sinks(face_clip, tiny_tflite_model, tmp_path, read_jsonl):
    cfg = config(face_clip.path, tiny_tflite_model, jsonl=str(tmp_path / "e.jsonl"))
    cfg.source.loop = True

    def kill_at_20(sink, result):
        if result.frame.index == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    rec = RecordingSink(kill_at_20)
    summary = run(cfg, extra_sinks=[rec], notifier=quiet())
    assert summary.stopped_by == "SIGTERM" and summary.frames in (21, 22)
    assert rec.closed == 1
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    lines = read_jsonl(tmp_path / "e.jsonl")  # every line is whole JSON
    assert any(e["type"] == "event" for e in lines)


# --------------------------------------------------------------------------- a live source that dies
class DyingCapture:
    """Camera stand-in: 8 frames (every third one corrupt), then it is gone for good."""

    opens = 0

    def __init__(self, target, *args):
        type(self).opens += 1
        self.ok = type(self).opens == 1
        self.n = 0

    def isOpened(self):
        return self.ok

    def set(self, *args):
        return True

    def read(self):
        time.sleep(0.01)
        self.n += 1
        if not self.ok or self.n > 8:
            return False, None
        if self.n % 3 == 0:
            return True, None  # corrupt
        return True, np.full((120, 160, 3), 90, np.uint8)

    def release(self):
        self.ok = False


def test_camera_lost_for_good_ends_the_run_with_a_source_error(tiny_tflite_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sources.cv2, "VideoCapture", type("Cap", (DyingCapture,), {"opens": 0}))
    monkeypatch.setattr(sources, "BACKOFF_START_S", 0.05)
    cfg = RunConfig()
    cfg.source.camera = 0
    cfg.source.max_reconnect_s = 0.4
    cfg.classifier.model = str(tiny_tflite_model)
    cfg.log.jsonl = str(tmp_path / "e.jsonl")
    rec = RecordingSink()
    caplog.set_level("WARNING", logger="fer_edge.sources")
    with pytest.raises(SourceError, match="camera 0 was lost and could not be reopened"):
        run(cfg, extra_sinks=[rec], notifier=quiet())
    assert rec.closed == 1 and 1 <= len(rec.results) <= 6  # sinks flushed and closed on the way out
    assert (tmp_path / "e.jsonl").exists()
    assert any("reconnect attempt 1" in r.getMessage() for r in caplog.records)


def test_corrupt_frames_are_counted_in_the_summary(tiny_tflite_model, monkeypatch):
    class Flaky(DyingCapture):
        def read(self):
            time.sleep(0.03)
            self.n += 1
            return (True, None) if self.n % 3 == 0 else (True, np.full((120, 160, 3), 90, np.uint8))

    monkeypatch.setattr(sources.cv2, "VideoCapture", type("Cap", (Flaky,), {"opens": 0}))
    cfg = RunConfig()
    cfg.source.camera = 0
    cfg.source.reconnect = False
    cfg.classifier.model = str(tiny_tflite_model)
    cfg.max_frames = 8
    summary = run(cfg, use_sinks=False, notifier=quiet())
    assert summary.frames == 8
    assert summary.source["corrupt"] >= 3 and summary.source["delivered"] == 8


# --------------------------------------------------------------------------- systemd notifications
@pytest.fixture
def notify_socket(notify_log):
    """systemd's notify socket stand-in (conftest.notify_log): (address, messages() after a short wait)."""
    address, got = notify_log

    def messages() -> list[str]:
        time.sleep(0.2)
        return [message for _, message in got]

    return address, messages


def test_a_stuck_notify_socket_never_stalls_the_loop(tmp_path, caplog):
    path = tmp_path / "stuck.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))  # nobody reads: its queue fills up after a few datagrams
    n = Notifier(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3"})
    t0 = time.monotonic()
    for _ in range(500):
        n.tick("x")
    assert time.monotonic() - t0 < 2.0 and n.failures > 0
    assert sum("sd_notify" in r.getMessage() for r in caplog.records) == 1  # logged once, not 500 times
    sock.close()


def test_ready_watchdog_status_stopping(face_clip, tiny_tflite_model, notify_socket):
    address, messages = notify_socket
    notifier = Notifier(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"})  # WatchdogSec=0.6
    assert notifier.ping_every_s == pytest.approx(0.2)
    cfg = config(face_clip.path, tiny_tflite_model)
    cfg.max_frames = 40
    rec = RecordingSink(lambda sink, result: time.sleep(0.02))
    summary = run(cfg, use_sinks=False, extra_sinks=[rec], notifier=notifier)
    got = messages()
    assert got[0].startswith("READY=1\nSTATUS=")
    assert got[-1].startswith("STOPPING=1")
    pings = got.count("WATCHDOG=1")
    assert pings >= summary.seconds / 0.3 - 1  # at least twice per WatchdogSec, as systemd asks
    assert pings <= summary.seconds / 0.2 + 1  # but rate-limited, not one per frame
    assert sum(m.startswith("READY=1") for m in got) == 1


def test_notify_through_sdnotify_from_the_environment(notify_socket, monkeypatch):
    address, messages = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # another process's watchdog: not ours
    n = Notifier()
    assert n.enabled and n.watchdog_s is None
    n.ready("ok")
    n.stopping()
    assert messages() == ["READY=1\nSTATUS=ok", "STOPPING=1"]


def test_no_notify_socket_means_no_op():
    n = Notifier(env={})
    assert not n.enabled
    n.ready()
    n.tick("x")
    n.stopping()


# --------------------------------------------------------------------------- searching around tracked faces
def test_detect_around_maps_windows_back_and_drops_duplicates():
    from fer_edge.loop import detect_around
    from fer_edge.records import Detection

    class Fixed:
        def __init__(self):
            self.shapes = []

        def detect(self, image, gray=None):
            self.shapes.append(image.shape[:2])
            return [Detection((10, 20, 30, 30), 0.9)]

    det = Fixed()
    image = np.zeros((480, 640, 3), np.uint8)
    found = detect_around(det, image, [(100, 100, 50, 50), (104, 100, 50, 50)], margin=0.5)
    assert det.shapes == [(100, 100), (100, 100)]  # 50 px boxes grown by 25 px on each side
    assert [d.box for d in found] == [(85, 95, 30, 30)]  # (75 + 10, 75 + 20); the second is a duplicate
    found = detect_around(det, image, [(0, 0, 50, 50)], margin=0.5)  # clipped at the corner
    assert det.shapes[-1] == (75, 75) and found[0].box == (10, 20, 30, 30)


def test_search_around_faces_finds_the_same_events_as_full_frames(face_clip, tiny_tflite_model):
    results = {}
    for every in (1, 5):
        cfg = config(face_clip.path, tiny_tflite_model)
        cfg.detector.full_scan_every = every
        rec = RecordingSink()
        pipes = []
        run(cfg, use_sinks=False, extra_sinks=[rec], notifier=quiet(), on_ready=lambda p, s: pipes.append(p))
        results[every] = ([(r.frame.index, f.track_id) for r in rec.results for f in r.faces], pipes[0])
    (full_events, full_pipe), (roi_events, roi_pipe) = results[1], results[5]
    assert roi_events == full_events
    assert full_pipe.roi_scans == 0 and full_pipe.full_scans == len(face_clip.states)
    n_face = len(full_events)
    assert roi_pipe.roi_scans >= n_face * 3 // 5  # most frames with a face searched only around it
    assert roi_pipe.full_scans + roi_pipe.roi_scans == len(face_clip.states)


def test_a_newcomer_beside_a_tracked_face_is_found_at_the_next_full_search(astronaut_bgr, astronaut_face_box,
                                                                           tiny_tflite_model):
    from fer_edge.classifier import EmotionClassifier
    from fer_edge.loop import build_pipeline
    from fer_edge.records import Frame

    from .conftest import background, head_patch

    patch = head_patch(astronaut_bgr, astronaut_face_box, 200)
    cfg = RunConfig()
    cfg.detector.full_scan_every = 5
    pipe = build_pipeline(cfg, EmotionClassifier(tiny_tflite_model), notifier=quiet())
    seen: dict[int, int] = {}
    for i in range(16):
        image = background()
        image[140:340, 20:220] = patch
        if i >= 7:
            image[140:340, 400:600] = patch  # a second face walks in at frame 7
        result = pipe.process(Frame(i, image, 0.0), {"grab": 0.0, "sink": 0.0})
        pipe.frames += 1
        for face in result.faces:
            seen.setdefault(face.track_id, i)
    assert seen[1] == 0
    assert seen[2] == 10  # full searches at frames 0, 5, 10, 15: found at the first one after it came
    assert len(seen) == 2


def test_a_jsonl_log_says_how_it_was_made_and_the_report_shows_it(face_clip, tiny_tflite_model, tmp_path,
                                                                   read_jsonl):
    from fer_edge.contract import file_sha256
    from fer_edge.report import read_logs

    log = tmp_path / "events.jsonl"
    for flip in (False, True):  # two runs appended to one log, the second with mirror averaging
        cfg = config(face_clip.path, tiny_tflite_model, jsonl=str(log))
        cfg.classifier.flip_average = flip
        run(cfg, notifier=quiet())
    lines = read_jsonl(log)
    runs = [r for r in lines if r["type"] == "run"]
    assert lines[0]["type"] == "run" and len(runs) == 2  # each run's first line
    assert runs[0]["model"] == tiny_tflite_model.name and runs[0]["model_sha256"] == file_sha256(tiny_tflite_model)
    assert [r["flip_average"] for r in runs] == [False, True]
    assert runs[0]["min_confidence"] == RunConfig().tracker.min_confidence and runs[0]["source"]
    second = lines.index(runs[1])
    assert all(r["type"] != "run" for r in lines[1:second]) and lines[second + 1]["type"] == "event"
    session = read_logs([log])
    assert session.skipped == 0 and len(session.runs) == 2
    made = session.recorded_with()  # one line per distinct model and settings
    assert len(made) == 2 and "mirror averaging off" in made[0] and "mirror averaging on" in made[1]
