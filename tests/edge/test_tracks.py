"""Clean tracks: a track reaches the sinks only once seen in confirm_frames detection passes.

A one-pass ghost box never reaches the event logs, MQTT, the metrics or the summary; a real face's
first frames are all logged (when it is confirmed, with their own frame numbers and times).
"""
from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from fer_edge.config import RunConfig, TrackerConfig, load_config
from fer_edge.errors import ConfigError
from fer_edge.loop import Pipeline
from fer_edge.records import Detection, Frame, FrameResult
from fer_edge.report import read_logs
from fer_edge.sinks.eventlog import CsvSink, JsonlSink
from fer_edge.sinks.metrics import MetricsSink
from fer_edge.sinks.summary import SummarySink
from fer_edge.smoother import Smoother
from fer_edge.sources import Source
from fer_edge.tracker import IouTracker, TrackGate

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
REAL = (100, 100, 120, 120)
GHOST = (420, 300, 80, 80)  # far from the face: a new track whenever it is detected


class ScriptedDetector:
    """Detections per frame index from a script; counts its calls."""

    name = "haar"

    def __init__(self, script: dict[int, list[tuple]]):
        self.script = script
        self.frame = 0  # set by the source before each frame

    def detect(self, image, gray=None):
        return [Detection(box) for box in self.script.get(int(image[0, 0, 0]), [])]


class HappyClassifier:
    labels = LABELS
    input_size = (48, 48)

    def prepare(self, face):
        return face

    def invoke(self, tensor):
        p = np.full(7, 0.02, np.float32)
        p[3] = 0.88
        return p


class ListSource(Source):
    """n blank frames, the frame index written into the first pixel (the scripted detector reads it)."""

    def __init__(self, n: int):
        super().__init__("frames")
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            image = np.zeros((480, 640, 3), np.uint8)
            image[0, 0, 0] = i
            self.delivered += 1
            yield Frame(i, image, 1_700_000_000.0 + i / 10, self.name)


class Recorder:
    def __init__(self):
        self.results: list[FrameResult] = []

    def write(self, result):
        self.results.append(result)

    def close(self):
        pass


class FakeMqttClient:
    def __init__(self):
        self.payloads = []

    def publish(self, topic, payload, qos=0, retain=False):
        if not retain:  # (the retained one is the sink's "offline" status at close)
            self.payloads.append(json.loads(payload))

        class Info:
            rc = 0

            def wait_for_publish(self, timeout=None):
                pass

        return Info()

    def disconnect(self):
        pass

    def loop_stop(self):
        pass


def run_script(script, n, sinks, confirm_frames=2, detect_every=1):
    pipeline = Pipeline(ScriptedDetector(script), HappyClassifier(), IouTracker(0.3, max_missed=3),
                        Smoother(LABELS, "ema"), sinks, detect_every=detect_every, confirm_frames=confirm_frames)
    return pipeline.run(ListSource(n))


def every_sink(tmp_path):
    from fer_edge.config import MqttConfig
    from fer_edge.sinks.mqtt import MqttSink

    jsonl = JsonlSink(tmp_path / "e.jsonl", LABELS)
    summary = SummarySink(LABELS, every_s=0, jsonl=jsonl)
    metrics = MetricsSink(LABELS, port=0)
    mqtt = MqttSink(MqttConfig(host="127.0.0.1", port=free_port()), LABELS)  # the real sink, no broker ...
    mqtt.client.loop_stop()
    mqtt.client = FakeMqttClient()  # ... publishing into a list, as if connected
    mqtt._connected = True
    return {"jsonl": jsonl, "csv": CsvSink(tmp_path / "e.csv", LABELS), "summary": summary, "metrics": metrics,
            "mqtt": mqtt, "mqtt_client": mqtt.client}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric(sink: MetricsSink, name: str, **labels: str) -> float:
    return sink.registry.get_sample_value(name, labels) or 0.0


def test_a_one_frame_ghost_reaches_no_sink_and_the_real_face_loses_no_frame(tmp_path):
    script = {i: [REAL] for i in range(10)}
    script[4] = [REAL, GHOST]  # the ghost: one detection pass
    s = every_sink(tmp_path)
    rec = Recorder()
    sinks = [s["jsonl"], s["csv"], s["summary"], s["metrics"], s["mqtt"], rec]
    try:
        summary = run_script(script, 10, sinks)
    finally:
        for sink in reversed(sinks):  # as close_sinks does: the summary's last line goes into the log
            sink.close()
    assert summary.ghosts == 1 and summary.faces == 10

    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    logged = [e for e in events if e["type"] == "event"]
    assert sorted(e["frame"] for e in logged) == list(range(10))  # frame 0 too, written at frame 1
    assert {e["track_id"] for e in logged} == {1}
    assert [e["frame"] for e in logged][:2] == [0, 1]  # in frame order: the late one first
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert sorted(int(r["frame"]) for r in rows) == list(range(10)) and {r["track_id"] for r in rows} == {"1"}
    assert {e["track_id"] for e in s["mqtt_client"].payloads} == {1} and len(s["mqtt_client"].payloads) == 10
    (final,) = [e for e in events if e["type"] == "summary"][-1:]
    assert [t["track_id"] for t in final["tracks"]] == [1] and final["tracks"][0]["frames"] == 10
    assert final["tracks"][0]["first_seen"] == logged[0]["time"]
    assert metric(s["metrics"], "fer_edge_faces_total") == 10
    assert metric(s["metrics"], "fer_edge_events_total", emotion="happy") == 10
    # the other sinks (overlay, display, video) see the confirmed faces only, the late ones aside
    assert all(f.track_id == 1 for r in rec.results for f in r.faces)
    assert [len(r.faces) for r in rec.results] == [0] + [1] * 9 and len(rec.results[1].late) == 1


def test_without_confirmation_the_ghost_is_a_track_in_the_log(tmp_path):
    """The same script with confirm_frames = 1 (the old behaviour): the test above can fail."""
    script = {i: [REAL] for i in range(10)}
    script[4] = [REAL, GHOST]
    jsonl = JsonlSink(tmp_path / "e.jsonl", LABELS)
    summary = run_script(script, 10, [jsonl], confirm_frames=1)
    jsonl.close()
    logged = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert {e["track_id"] for e in logged} == {1, 2} and summary.ghosts == 0


@pytest.mark.parametrize("detect_every, confirm", [(1, 3), (3, 2), (2, 3)])
def test_first_frames_are_written_when_confirmed(tmp_path, detect_every, confirm):
    # a face from frame 2 on; the detector misses it in one pass (the track survives the gap)
    miss = 2 + detect_every
    script = {i: [REAL] for i in range(2, 24) if i != miss}
    script[0] = [GHOST]  # a ghost seen in one pass, and gone
    if confirm == 3:  # the ghost's track gets a second pass: still fewer than 3
        script[2 * detect_every] = script.get(2 * detect_every, []) + [GHOST]
    jsonl = JsonlSink(tmp_path / "e.jsonl", LABELS)
    rec = Recorder()
    summary = run_script(script, 24, [jsonl, rec], confirm_frames=confirm, detect_every=detect_every)
    jsonl.close()
    logged = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    face_frames = sorted(e["frame"] for e in logged if e["box"] == list(REAL))
    # every frame the face was shown on, from its first detection pass on (between passes the box is carried)
    first = min(i for i in range(0, 24, detect_every) if REAL in script.get(i, []))
    shown = [fr.frame.index for r in rec.results for fr in [*r.late, r] for f in fr.faces if f.box == REAL]
    assert face_frames == sorted(shown) and face_frames[0] == first and face_frames[-1] == 23
    assert not any(e["box"] == list(GHOST) for e in logged)
    assert summary.ghosts == 1
    # the face's events reached the sinks late by at most (confirm - 1) passes plus a missed one
    lateness = [r.frame.index - late.frame.index for r in rec.results for late in r.late]
    assert lateness and max(lateness) <= (confirm - 1 + 1) * detect_every + detect_every - 1


def test_gate_drops_an_expired_track_and_counts_it():
    gate = TrackGate(2)
    tracker = IouTracker(0.3, max_missed=1)
    from fer_edge.records import FaceResult

    def step(i, boxes):
        tracks = tracker.update([Detection(b) for b in boxes])
        faces = [FaceResult(t.id, t.box, np.ones(7, np.float32) / 7, "neutral", 0.2) for t in tracks]
        return gate.gate(FrameResult(Frame(i, np.zeros((4, 4, 3), np.uint8), float(i)), faces, LABELS),
                         tracker.tracks)

    assert step(0, [GHOST]).faces == [] and gate.holding == 1
    step(1, [])
    step(2, [])  # expired (max_missed 1): its held event is dropped
    assert gate.holding == 0 and gate.ghosts == 1
    out = step(3, [REAL])
    assert out.faces == [] and out.late == []
    out = step(4, [REAL])
    assert [f.track_id for f in out.faces] == [2] and [r.frame.index for r in out.late] == [3]
    assert out.late[0].frame.image.size == 0, "held events keep no image"
    with pytest.raises(ValueError):
        TrackGate(0)


def test_a_still_needs_no_confirmation():
    gate = TrackGate(3)
    from fer_edge.records import FaceResult

    tracker = IouTracker()
    tracks = tracker.update([Detection(REAL)])
    face = FaceResult(1, REAL, np.ones(7, np.float32) / 7, "neutral", 0.2)
    frame = Frame(0, np.zeros((4, 4, 3), np.uint8), 0.0, still=True)
    assert gate.gate(FrameResult(frame, [face], LABELS), tracker.tracks).faces == [face]
    assert tracks and gate.holding == 0


def test_confirm_frames_in_config_and_cli(tmp_path):
    assert TrackerConfig().confirm_frames == 3
    bad = tmp_path / "bad.toml"
    bad.write_text("[tracker]\nconfirm_frames = 0\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*confirm_frames"):
        load_config(bad)
    from fer_edge.cli import build_config

    cfg = build_config({"source_path": "x.mp4", "confirm_frames": 4})
    assert cfg.tracker.confirm_frames == 4 and isinstance(cfg, RunConfig)


def test_report_reads_a_log_with_late_events_as_one_session(tmp_path):
    """Late events step back a few frames in the file: that is not a restarted run."""
    script = {i: [REAL] for i in range(0, 30)}
    for i in range(10, 30):
        script[i] = [REAL, GHOST]  # a second face from frame 10 (a real one: it stays)
    script[12] = [REAL]  # missed once
    jsonl = JsonlSink(tmp_path / "e.jsonl", LABELS)
    run_script(script, 30, [jsonl], confirm_frames=3, detect_every=2)
    jsonl.close()
    frames = [json.loads(line)["frame"] for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert any(b < a - 1 for a, b in zip(frames, frames[1:])), "the log steps back (late events)"
    session = read_logs([tmp_path / "e.jsonl"])
    assert [t.key for t in session.tracks] == ["1", "2"]
    assert list(session.tracks[1].frames) == [f for f in range(10, 30) if f not in (12, 13)]  # 12: missed pass


def test_time_is_not_spent_holding(tmp_path):
    """Holding costs nothing when every track is confirmed: the result object passes through."""
    gate = TrackGate(2)
    tracker = IouTracker()
    tracker.update([Detection(REAL)])
    tracker.update([Detection(REAL)])
    from fer_edge.records import FaceResult

    result = FrameResult(Frame(0, np.zeros((4, 4, 3), np.uint8), time.time()),
                         [FaceResult(1, REAL, np.ones(7, np.float32) / 7, "neutral", 0.2)], LABELS)
    assert gate.gate(result, tracker.tracks) is result
