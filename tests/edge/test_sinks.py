"""Sinks: event logs (JSONL/CSV, flush, rotation), summary, save-frames, Prometheus, build_sinks."""
from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import socket
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_edge.config import RunConfig
from fer_edge.contract import EMOTIONS
from fer_edge.errors import ConfigError, DeviceError
from fer_edge.records import FaceResult, Frame, FrameResult
from fer_edge.sinks import Sink, build_sinks, close_sinks
from fer_edge.sinks.eventlog import CsvSink, JsonlSink, RotatingWriter
from fer_edge.sinks.frames import FrameSaverSink
from fer_edge.sinks.metrics import MetricsSink
from fer_edge.sinks.summary import SummarySink

T0 = 1_790_000_000.0  # a fixed epoch second (2026), so times in the logs are predictable


def make_probs(label: str, rng: np.random.Generator, labels=EMOTIONS) -> np.ndarray:
    p = rng.dirichlet(np.ones(len(labels))) * 0.4
    p[labels.index(label)] += 0.6
    return p / p.sum()


def make_result(index: int, timestamp: float, faces=(), labels=EMOTIONS, image=None, seed: int | None = None,
                fps: float = 15.0) -> FrameResult:
    """faces: (track_id, box, label) tuples; label "uncertain" gets flat probabilities."""
    rng = np.random.default_rng(index if seed is None else seed)
    if image is None:
        image = np.full((480, 640, 3), 90, np.uint8)
    out = []
    for track_id, box, label in faces:
        if label == "uncertain":
            probs = np.full(len(labels), 1.0 / len(labels))
            score = float(probs.max())
        else:
            probs = make_probs(label, rng, labels)
            score = float(probs[labels.index(label)])
        out.append(FaceResult(track_id, tuple(box), probs, label, score, raw_probs=probs))
    return FrameResult(Frame(index, image, timestamp, "test"), out, tuple(labels), fps,
                       {"detect": 4.2, "track": 0.1, "classify": 2.5})


TWO_FACES = ((1, (100, 80, 120, 140), "happy"), (2, (400, 120, 90, 100), "uncertain"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- JSONL / CSV
def check_event(event: dict, labels=EMOTIONS) -> None:
    assert set(event) == {"type", "time", "frame", "track_id", "box", "emotion", "score", "probs", "reason", "file"}
    assert event["type"] == "event"
    when = dt.datetime.fromisoformat(event["time"])
    assert when.tzinfo is not None, "time must carry its UTC offset"
    assert isinstance(event["frame"], int) and isinstance(event["track_id"], int)
    assert len(event["box"]) == 4 and all(isinstance(v, int) for v in event["box"])
    assert event["emotion"] in labels + ("uncertain",)
    assert list(event["probs"]) == list(labels)
    assert sum(event["probs"].values()) == pytest.approx(1.0, abs=1e-3)
    if event["emotion"] != "uncertain":
        assert event["score"] == pytest.approx(event["probs"][event["emotion"]], abs=1e-4)


def test_jsonl_lines_complete_and_flushed_per_frame(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"
    sink = JsonlSink(path, EMOTIONS)
    for i in range(5):
        sink.write(make_result(i, T0 + i / 10, TWO_FACES))
        # read while the sink is still open: the frame's lines are already in the file
        lines = path.read_text().splitlines()
        assert len(lines) == 2 * (i + 1)
    sink.write(make_result(5, T0 + 0.5, ()))  # a frame without faces logs nothing
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(events) == 10
    for event in events:
        check_event(event)
    assert [e["frame"] for e in events] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert {e["track_id"] for e in events} == {1, 2}
    first = events[0]
    assert dt.datetime.fromisoformat(first["time"]).timestamp() == pytest.approx(T0, abs=1e-3)
    assert first["box"] == [100, 80, 120, 140] and first["emotion"] == "happy"
    assert events[1]["emotion"] == "uncertain"
    assert sink.stats["events"] == 10
    sink.close()
    sink.close()  # idempotent


def test_csv_rows_complete_and_flushed_per_frame(tmp_path):
    path = tmp_path / "events.csv"
    sink = CsvSink(path, EMOTIONS)
    for i in range(3):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    rows = list(csv.DictReader(path.open()))  # before close
    assert len(rows) == 6
    assert list(rows[0]) == ["time", "frame", "track_id", "x", "y", "w", "h", "emotion", "score", *EMOTIONS, "reason",
                             "file"]
    for row in rows:
        assert dt.datetime.fromisoformat(row["time"]).tzinfo is not None
        assert row["emotion"] in EMOTIONS + ("uncertain",)
        assert sum(float(row[name]) for name in EMOTIONS) == pytest.approx(1.0, abs=1e-3)
    assert (rows[0]["x"], rows[0]["y"], rows[0]["w"], rows[0]["h"]) == ("100", "80", "120", "140")
    sink.close()
    sink.close()


def _frames_by_file(paths: list[Path]) -> dict[int, set[Path]]:
    where: dict[int, set[Path]] = {}
    for p in paths:
        for line in p.read_text().splitlines():
            where.setdefault(json.loads(line)["frame"], set()).add(p)
    return where


def test_jsonl_rotation_keeps_backups_and_whole_frames(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, EMOTIONS, max_bytes=3000, backups=2)
    for i in range(60):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    sink.close()
    files = [path, tmp_path / "events.jsonl.1", tmp_path / "events.jsonl.2"]
    assert all(p.is_file() for p in files)
    assert not (tmp_path / "events.jsonl.3").exists(), "only `backups` old files are kept"
    assert sink.stats["rotations"] >= 3
    for p in files:
        assert p.stat().st_size <= 3000
        text = p.read_text()
        assert text.endswith("\n")
        for line in text.splitlines():
            check_event(json.loads(line))
    where = _frames_by_file(files)
    assert all(len(v) == 1 for v in where.values()), "a frame's events never straddle two files"
    kept = sorted(where)
    assert kept == list(range(kept[0], 60)), "the newest frames are kept, none missing"
    # the newest lines are in events.jsonl, older ones in .1, oldest in .2
    newest = {json.loads(line)["frame"] for line in path.read_text().splitlines()}
    older = {json.loads(line)["frame"] for line in files[1].read_text().splitlines()}
    assert min(newest) > max(older)


def test_csv_rotation_repeats_header(tmp_path):
    path = tmp_path / "events.csv"
    sink = CsvSink(path, EMOTIONS, max_bytes=1500, backups=3)
    for i in range(40):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    sink.close()
    files = [path] + [tmp_path / f"events.csv.{k}" for k in (1, 2, 3)]
    assert all(p.is_file() for p in files)
    header = ["time", "frame", "track_id", "x", "y", "w", "h", "emotion", "score", *EMOTIONS, "reason", "file"]
    for p in files:
        rows = list(csv.reader(p.open()))
        assert rows[0] == header
        assert len(rows) > 1
        assert all(len(r) == len(header) for r in rows[1:])
        assert all(r[0] != "time" for r in rows[1:]), "header once per file"


def test_rotation_without_backups_starts_afresh(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, EMOTIONS, max_bytes=1200, backups=0)
    for i in range(30):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]
    assert path.stat().st_size <= 1200
    frames = [json.loads(line)["frame"] for line in path.read_text().splitlines()]
    assert frames[-1] == 29


def test_existing_logs_are_continued_safely(tmp_path):
    # a JSONL file a crash left mid-line: new lines start on a line of their own
    path = tmp_path / "events.jsonl"
    path.write_text('{"type":"event","frame":1}\n{"type":"ev')
    sink = JsonlSink(path, EMOTIONS)
    sink.write(make_result(7, T0, TWO_FACES))
    sink.close()
    lines = path.read_text().splitlines()
    assert lines[1] == '{"type":"ev'
    assert [json.loads(line)["frame"] for line in lines[2:]] == [7, 7]
    # a CSV written with other labels is rotated away, the new file gets this run's header
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("time,frame,track_id,x,y,w,h,emotion,score,a,b\n")
    sink = CsvSink(csv_path, EMOTIONS, backups=2)
    sink.write(make_result(8, T0, TWO_FACES))
    sink.close()
    assert (tmp_path / "events.csv.1").read_text().startswith("time,frame,track_id,x,y,w,h,emotion,score,a,b")
    assert csv_path.read_text().splitlines()[0].endswith(",".join(EMOTIONS) + ",reason,file")
    # continuing a CSV of the same labels appends without a second header
    sink = CsvSink(csv_path, EMOTIONS, backups=2)
    sink.write(make_result(9, T0, TWO_FACES))
    sink.close()
    rows = list(csv.reader(csv_path.open()))
    assert len(rows) == 5 and rows[0][0] == "time" and all(r[0] != "time" for r in rows[1:])


def test_fsync_is_time_based_not_per_frame(tmp_path, monkeypatch):
    calls = []
    real = __import__("os").fsync
    monkeypatch.setattr("fer_edge.sinks.eventlog.os.fsync", lambda fd: (calls.append(fd), real(fd)))
    clock = iter(np.arange(0, 100, 0.1)).__next__  # each write moves the clock 0.1 s
    writer = RotatingWriter(tmp_path / "x.jsonl", fsync_every_s=1.0, clock=clock)
    for _ in range(30):
        writer.write("{}\n")
    writer.close()
    assert 2 <= len(calls) <= 4, f"about one fsync per second of writes plus one at close, got {len(calls)}"


def test_unwritable_log_path_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="event log"):
        JsonlSink(blocker / "events.jsonl", EMOTIONS)


# ----------------------------------------------------------------------------- summary
def test_summary_periodic_and_at_close(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    jsonl = JsonlSink(path, EMOTIONS)
    summary = SummarySink(EMOTIONS, every_s=10.0, jsonl=jsonl)
    caplog.set_level(logging.INFO, logger="fer_edge.summary")
    # 0..14.5 s at 2 fps: track 1 happy throughout, track 2 sad (with a few uncertain) until 5 s only;
    # track 3 appears at 12 s
    for i in range(30):
        t = i * 0.5
        faces = [(1, (10, 10, 50, 50), "happy")]
        if t < 5:
            faces.append((2, (100, 10, 50, 50), "sad" if i % 4 else "uncertain"))
        if t >= 12:
            faces.append((3, (200, 10, 50, 50), "surprise"))
        result = make_result(i, T0 + t, faces)
        jsonl.write(result)
        summary.write(result)
    summary.close()
    jsonl.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    summaries = [r for r in records if r["type"] == "summary"]
    assert len(summaries) == 2, "one after 10 s of frame time, one at close"
    first, last = summaries
    # the first summary comes right after the frame at t = 10 s, i.e. after that frame's events
    assert records.index(first) == sum(1 for r in records[:records.index(first)] if r["type"] == "event")
    assert dt.datetime.fromisoformat(first["time"]).timestamp() == pytest.approx(T0 + 10)
    assert dt.datetime.fromisoformat(first["since"]).timestamp() == pytest.approx(T0)
    by_id = {t["track_id"]: t for t in first["tracks"]}
    assert set(by_id) == {1, 2}
    t1, t2 = by_id[1], by_id[2]
    assert t1["frames"] == 21 and t1["dominant"] == "happy" and t1["counts"] == {"happy": 21}
    assert dt.datetime.fromisoformat(t1["first_seen"]).timestamp() == pytest.approx(T0)
    assert dt.datetime.fromisoformat(t1["last_seen"]).timestamp() == pytest.approx(T0 + 10)
    assert t2["frames"] == 10 and t2["dominant"] == "sad" and t2["counts"] == {"sad": 7, "uncertain": 3}
    for t in first["tracks"]:
        assert list(t["mean_probs"]) == list(EMOTIONS)
        assert sum(t["mean_probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert max(t1["mean_probs"], key=t1["mean_probs"].get) == "happy"
    # the last one (at close) has the tracks seen since: 1 (whole life so far) and the new 3; 2 is gone
    by_id = {t["track_id"]: t for t in last["tracks"]}
    assert set(by_id) == {1, 3}
    assert by_id[1]["frames"] == 30 and by_id[3]["frames"] == 6 and by_id[3]["dominant"] == "surprise"
    # and each track got an INFO line
    lines = [r.getMessage() for r in caplog.records if r.name == "fer_edge.summary"]
    assert sum("track 1:" in m for m in lines) == 2 and sum("track 2:" in m for m in lines) == 1
    assert any("mostly happy" in m for m in lines)


def test_summary_without_jsonl_only_logs(caplog):
    caplog.set_level(logging.INFO, logger="fer_edge.summary")
    summary = SummarySink(EMOTIONS, every_s=60.0)
    summary.write(make_result(0, T0, ()))
    summary.close()
    summary.close()
    assert summary.stats["summaries"] == 1
    assert any("no faces" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- save frames
def test_save_frames_off_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig()
    assert cfg.log.save_frames is None
    cfg.log.jsonl = str(tmp_path / "events.jsonl")
    sinks = build_sinks(cfg, EMOTIONS)
    assert not any(isinstance(s, FrameSaverSink) for s in sinks)
    for i in range(20):
        for s in sinks:
            s.write(make_result(i, T0 + i, TWO_FACES))
    close_sinks(sinks)
    images = [p for p in tmp_path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert images == [], "no image is stored unless --save-frames is given"


def test_save_frames_rate_limited_annotated_jpegs(tmp_path):
    folder = tmp_path / "frames"
    sink = FrameSaverSink(folder, every_s=1.0)
    image = np.full((240, 320, 3), 128, np.uint8)
    for i in range(40):  # 10 fps for 4 s; faces only in the first 3.5 s
        faces = ((5, (40, 40, 80, 90), "happy"),) if i < 35 else ()
        sink.write(make_result(i, T0 + i / 10, faces, image=image))
    sink.close()
    files = sorted(folder.iterdir())
    assert [p.name.split("_")[1] for p in files] == ["00000000", "00000010", "00000020", "00000030"]
    assert all(p.suffix == ".jpg" for p in files)
    saved = cv2.imread(str(files[0]))
    assert saved is not None and saved.shape == image.shape
    assert np.abs(saved.astype(int) - 128).max() > 60, "the overlay is drawn on the saved frame"
    assert (image == 128).all(), "the frame itself is left untouched"
    assert sink.stats["saved"] == 4


# ----------------------------------------------------------------------------- metrics
def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the scrape")


def test_metrics_exporter_scrape(tmp_path):
    port = free_port()
    sink = MetricsSink(EMOTIONS, port=port)
    assert sink.host == "127.0.0.1" and sink.port == port
    sink.attach_source_stats(lambda: {"delivered": 11, "dropped": 7, "corrupt": 2, "reconnects": 1})
    for i in range(3):
        sink.write(make_result(i, T0 + i, TWO_FACES, fps=12.5))
    sink.write(make_result(3, T0 + 3, (), fps=12.5))
    text = scrape(port)
    assert metric_value(text, "fer_edge_frames_total") == 4
    assert metric_value(text, "fer_edge_faces_total") == 6
    assert metric_value(text, "fer_edge_faces_current") == 0
    assert metric_value(text, "fer_edge_fps") == 12.5
    assert metric_value(text, 'fer_edge_events_total{emotion="happy"}') == 3
    assert metric_value(text, 'fer_edge_events_total{emotion="uncertain"}') == 3
    assert metric_value(text, 'fer_edge_events_total{emotion="sad"}') == 0
    assert metric_value(text, 'fer_edge_stage_seconds_count{stage="detect"}') == 4
    assert metric_value(text, 'fer_edge_stage_seconds_sum{stage="classify"}') == pytest.approx(0.01)
    assert 'fer_edge_stage_seconds_bucket{le="0.005",stage="detect"} 4.0' in text
    assert metric_value(text, "fer_edge_source_frames_total") == 11
    assert metric_value(text, "fer_edge_dropped_frames_total") == 7
    assert metric_value(text, "fer_edge_corrupt_frames_total") == 2
    assert metric_value(text, "fer_edge_source_reconnects_total") == 1
    assert metric_value(text, "fer_edge_last_frame_timestamp_seconds") == pytest.approx(T0 + 3)
    assert "fer_edge_mqtt" not in text, "no MQTT metrics when MQTT is off"
    # a second exporter in the same process does not collide (private registries)
    other = MetricsSink(EMOTIONS, port=0)
    assert metric_value(scrape(other.port), "fer_edge_frames_total") == 0
    other.close()
    sink.close()
    sink.close()
    with pytest.raises(OSError):
        scrape(port)


def test_metrics_port_in_use_is_a_config_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            MetricsSink(EMOTIONS, port=s.getsockname()[1])


# ----------------------------------------------------------------------------- build_sinks
def test_build_sinks_builds_what_the_config_asks(tmp_path):
    cfg = RunConfig()
    cfg.log.jsonl = str(tmp_path / "events.jsonl")
    cfg.log.csv = str(tmp_path / "events.csv")
    assert cfg.mqtt.host is None and cfg.metrics.port is None and not cfg.display.enabled
    sinks = build_sinks(cfg, EMOTIONS)
    assert [type(s) for s in sinks] == [JsonlSink, CsvSink, SummarySink]
    assert sinks[2].jsonl is sinks[0], "the summary goes into the JSONL log"
    assert all(isinstance(s, Sink) and s.should_stop is False for s in sinks)
    for s in sinks:
        s.write(make_result(0, T0, TWO_FACES))
    close_sinks(sinks)
    close_sinks(sinks)
    assert all(s.closed for s in sinks)
    assert json.loads(Path(cfg.log.jsonl).read_text().splitlines()[-1])["type"] == "summary"

    cfg.log.summary_every_s = 0
    sinks = build_sinks(cfg, EMOTIONS)
    assert [type(s) for s in sinks] == [JsonlSink, CsvSink]
    close_sinks(sinks)

    assert [type(s) for s in build_sinks(RunConfig(), EMOTIONS)] == [SummarySink]


def test_build_sinks_closes_what_it_built_when_a_later_sink_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    closed = []
    monkeypatch.setattr(JsonlSink, "_close", lambda self: (closed.append(self), self.writer.close()))
    cfg = RunConfig()
    cfg.log.jsonl = str(tmp_path / "events.jsonl")
    cfg.display.enabled = True
    with pytest.raises(DeviceError) as err:
        build_sinks(cfg, EMOTIONS)
    assert err.value.exit_code == 6
    assert len(closed) == 1


def test_close_sinks_reverse_order_and_survives_failures():
    order = []

    class Recorder(Sink):
        def __init__(self, name, fail=False):
            super().__init__()
            self.name, self.fail = name, fail

        def write(self, result):
            pass

        def _close(self):
            order.append(self.name)
            if self.fail:
                raise OSError("disk gone")

    close_sinks([Recorder("a"), Recorder("b", fail=True), Recorder("c")])
    assert order == ["c", "b", "a"]
