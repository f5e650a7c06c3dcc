"""fer-edge report: event logs written by the runtime's own sinks (JSONL and CSV, rotated) become a
summary whose figures are known, per-track charts and one self-contained HTML page."""
from __future__ import annotations

import base64
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fer_edge.cli import cli
from fer_edge.contract import EMOTIONS
from fer_edge.errors import DataError, DeviceError
from fer_edge.records import FaceResult, Frame, FrameResult
from fer_edge.report import build_report, expand_logs, read_logs
from fer_edge.sinks.eventlog import CsvSink, JsonlSink

T0 = 1_780_000_000.0
FPS = 10.0


def script():
    """(frame, track, label) of a known session: track 1 is happy for 6 s, sad for 4 s, then
    "uncertain" for 2 s (3 label changes counted at 2 boundaries); track 2 is neutral from 3 s to 8 s."""
    out = []
    for i in range(120):
        label = "happy" if i < 60 else "sad" if i < 100 else "uncertain"
        faces = [(1, label)]
        if 30 <= i < 80:
            faces.append((2, "neutral"))
        out.append((i, faces))
    return out


def probs_for(label: str) -> np.ndarray:
    p = np.full(len(EMOTIONS), 0.3 / (len(EMOTIONS) - 1), np.float32)
    if label == "uncertain":
        return np.full(len(EMOTIONS), 1 / len(EMOTIONS), np.float32)
    p[EMOTIONS.index(label)] = 0.7
    return p


def write_logs(folder, max_bytes=0, kinds=("jsonl", "csv"), start_frame=0, t0=T0):
    sinks = []
    if "jsonl" in kinds:
        sinks.append(JsonlSink(folder / "events.jsonl", EMOTIONS, max_bytes=max_bytes, backups=20))
    if "csv" in kinds:
        sinks.append(CsvSink(folder / "events.csv", EMOTIONS, max_bytes=max_bytes, backups=20))
    for i, faces in script():
        frs = [FaceResult(tid, (10 + 100 * tid, 20, 80, 80), probs_for(lab), lab, float(probs_for(lab).max()))
               for tid, lab in faces]
        result = FrameResult(Frame(start_frame + i, np.zeros((4, 4, 3), np.uint8), t0 + i / FPS, "t"), frs, EMOTIONS)
        for s in sinks:
            s.write(result)
    for s in sinks:
        s.close()
    return folder


def test_rotated_jsonl_set_is_read_whole_and_summarised(tmp_path):
    write_logs(tmp_path, max_bytes=4000, kinds=("jsonl",))
    rotated = sorted(p.name for p in tmp_path.glob("events.jsonl.*"))
    assert len(rotated) >= 3  # the set really is rotated
    files = expand_logs([tmp_path / "events.jsonl"])
    assert files[-1].name == "events.jsonl" and files[0].name == f"events.jsonl.{len(rotated)}"  # oldest first
    session = read_logs([tmp_path / "events.jsonl"])
    assert session.events == 170 and [t.key for t in session.tracks] == ["1", "2"]
    result = build_report([tmp_path / "events.jsonl"], tmp_path / "out")
    one, two = result["rows"]
    assert one["events"] == 120 and one["dominant"] == "happy"
    assert one["share"]["happy"] == 50.0 and one["share"]["sad"] == pytest.approx(33.3, abs=0.1)
    assert one["uncertain_pct"] == pytest.approx(16.7, abs=0.1)
    assert one["label_changes"] == 2 and one["duration_s"] == pytest.approx(11.9)
    assert one["changes_per_min"] == pytest.approx(2 / (11.9 / 60), abs=0.1)
    assert two["events"] == 50 and two["share"]["neutral"] == 100.0 and two["label_changes"] == 0
    assert session.tracks[1].times[0] == pytest.approx(3.0)  # track 2 starts 3 s into the session
    np.testing.assert_allclose(session.tracks[0].probs[0], probs_for("happy"), atol=1e-4)
    # --fps: video time from frame numbers (the clock ran 10 frames/s; at 20 frames/s all is twice as fast)
    fast = read_logs([tmp_path / "events.jsonl"], fps=20.0)
    assert fast.tracks[0].times[-1] == pytest.approx(119 / 20) and fast.tracks[1].times[0] == pytest.approx(1.5)


def test_csv_gives_the_same_summary_and_both_logs_count_once(tmp_path):
    write_logs(tmp_path, max_bytes=3000)
    from_jsonl = build_report([tmp_path / "events.jsonl"], tmp_path / "a")["rows"]
    from_csv = build_report([tmp_path / "events.csv"], tmp_path / "b")["rows"]
    assert from_csv == from_jsonl
    both = build_report([tmp_path / "events.jsonl", tmp_path / "events.csv"], tmp_path / "c")
    assert both["rows"] == from_jsonl and both["session"].duplicates == 170
    folder = build_report([tmp_path], tmp_path / "d")  # a folder: every log in it
    assert folder["rows"] == from_jsonl
    assert (tmp_path / "b" / "summary.csv").read_text() == (tmp_path / "a" / "summary.csv").read_text()


def test_the_page_is_self_contained_with_every_chart(tmp_path):
    write_logs(tmp_path, kinds=("jsonl",))
    result = build_report([tmp_path / "events.jsonl"], tmp_path / "out", title="Session <1>")
    page = result["html"].read_text()
    images = page.count('src="data:image/png;base64,')
    assert images == 3  # overview + one timeline per track
    assert "Session &lt;1&gt;" in page and "<script" not in page and "http" not in page.split("<body>")[1]
    assert page.count("<tr>") == 1 + 2  # header + one row per track
    for png in ("overview.png", "track_1.png", "track_2.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and base64.b64encode(data).decode() in page


def test_a_cut_line_is_skipped_and_a_second_run_is_a_new_session(tmp_path):
    write_logs(tmp_path, kinds=("jsonl",))
    log = tmp_path / "events.jsonl"
    text = log.read_text()
    log.write_text(text + '{"type": "event", "time": "2026-')  # a crash mid-line
    run2 = tmp_path / "second"
    run2.mkdir()
    write_logs(run2, kinds=("jsonl",), t0=T0 + 3600)
    log.write_text(log.read_text() + "\n" + (run2 / "events.jsonl").read_text())  # a second run appended
    session = read_logs([log])
    assert session.skipped == 1
    assert [t.key for t in session.tracks] == ["s1 track 1", "s1 track 2", "s2 track 1", "s2 track 2"]


def test_cli_report_and_its_errors(tmp_path):
    write_logs(tmp_path, kinds=("csv",))
    runner = CliRunner()
    out = runner.invoke(cli, ["report", str(tmp_path / "events.csv"), "--out", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert "2 track(s), 170 events" in out.output and (tmp_path / "r" / "index.html").is_file()
    assert "report" in runner.invoke(cli, ["--help"]).output
    with pytest.raises(DataError, match="log not found"):
        read_logs([tmp_path / "nope.jsonl"])
    (tmp_path / "empty.jsonl").write_text('{"type": "summary", "tracks": []}\n')
    with pytest.raises(DataError, match="no events"):
        read_logs([tmp_path / "empty.jsonl"])
    (tmp_path / "other.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="not a fer-edge CSV"):
        read_logs([tmp_path / "other.csv"])


def test_without_matplotlib_a_clear_message_and_nothing_written(tmp_path, monkeypatch):
    write_logs(tmp_path, kinds=("jsonl",))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(DeviceError, match=r"matplotlib.*fer-edge\[report\]"):
        build_report([tmp_path / "events.jsonl"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_runtime_never_imports_matplotlib():
    import subprocess

    code = "import sys, fer_edge.cli, fer_edge.report, fer_edge.classifier, fer_edge.smoother; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_the_page_says_which_model_and_settings_made_the_log(tmp_path):
    write_logs(tmp_path, kinds=("jsonl",))
    log = tmp_path / "events.jsonl"
    made = {"type": "run", "time": "2026-11-30T10:00:00.000+00:00", "fer_edge": "0.1.0", "source": "cam0",
            "model": "fer_default_int8.tflite", "model_sha256": "ab" * 32, "flip_average": True,
            "min_confidence": 0.57, "smoothing": "ema", "detector": "blazeface <short>"}
    log.write_text(json.dumps(made) + "\n" + log.read_text())
    session = read_logs([log])
    assert session.skipped == 0 and session.runs == [made]
    page = build_report([log], tmp_path / "out")["html"].read_text()
    assert ("Recorded with fer_default_int8.tflite (sha256 abababababab), mirror averaging on, --min-confidence 0.57"
            in page) and "blazeface &lt;short&gt;" in page  # escaped
    write_logs(tmp_path / "old", kinds=("jsonl",))  # a log from before run lines: no such line on the page
    assert "Recorded with" not in build_report([tmp_path / "old" / "events.jsonl"], tmp_path / "out2")["html"].read_text()


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_each_photo_s_faces_are_their_own_tracks(tmp_path, kind):
    """Photo mode counts IDs from 1 in every photo: face 1 of a.jpg and face 1 of b.jpg are two people,
    and a second b.jpg in another folder is a third file."""
    log = tmp_path / f"photos.{kind}"
    sink = (JsonlSink if kind == "jsonl" else CsvSink)(log, EMOTIONS)
    photos = [("/p/a.jpg", ["happy", "sad"]), ("/p/b.jpg", ["angry"]), ("/q/b.jpg", ["fear"])]
    for index, (file, labels) in enumerate(photos):
        faces = [FaceResult(tid, (10 + 100 * tid, 20, 80, 80), probs_for(lab), lab, float(probs_for(lab).max()))
                 for tid, lab in enumerate(labels, 1)]
        frame = Frame(index, np.zeros((4, 4, 3), np.uint8), T0 + index, file, file=file, still=True)
        sink.write(FrameResult(frame, faces, EMOTIONS))
    sink.close()
    session = read_logs([log])
    assert [(t.key, t.file, t.emotions) for t in session.tracks] == [
        ("a.jpg track 1", "/p/a.jpg", ["happy"]), ("a.jpg track 2", "/p/a.jpg", ["sad"]),
        ("/p/b.jpg track 1", "/p/b.jpg", ["angry"]), ("/q/b.jpg track 1", "/q/b.jpg", ["fear"])]
    pytest.importorskip("matplotlib")
    result = build_report([log], tmp_path / "out")
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("track,file,first_seen") and summary[1].startswith("a.jpg track 1,/p/a.jpg,")
    # one event per face: no timelines, the table says it all
    assert len(result["rows"]) == 4 and list((tmp_path / "out").glob("track_*.png")) == [] and result["tracks"] == {}
    assert "4 track(s) with a single event" in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_photo_without_a_face_is_logged_and_reported(tmp_path, kind):
    """A folder's log accounts for every photo: one with no face found gets a "photo" line (JSONL) or a
    "no face" row (CSV), and the report names it; the events are read as before."""
    import csv as csv_mod

    log = tmp_path / f"photos.{kind}"
    sink = (JsonlSink if kind == "jsonl" else CsvSink)(log, EMOTIONS)
    for index, (file, labels) in enumerate([("/p/a.jpg", ["happy"]), ("/p/empty.jpg", []), ("/p/c.jpg", ["sad"])]):
        faces = [FaceResult(tid, (10, 20, 80, 80), probs_for(lab), lab, float(probs_for(lab).max()))
                 for tid, lab in enumerate(labels, 1)]
        frame = Frame(index, np.zeros((4, 4, 3), np.uint8), T0 + index, file, file=file, still=True)
        sink.write(FrameResult(frame, faces, EMOTIONS))
    sink.close()
    if kind == "jsonl":
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(x["type"], x.get("file"), x.get("faces")) for x in lines] == [
            ("photo", "/p/a.jpg", 1), ("event", "/p/a.jpg", None), ("photo", "/p/empty.jpg", 0),
            ("photo", "/p/c.jpg", 1), ("event", "/p/c.jpg", None)]
    else:
        rows = list(csv_mod.DictReader(log.open()))
        assert [(r["track_id"], r["emotion"], r["reason"], r["file"]) for r in rows] == [
            ("1", "happy", "", "/p/a.jpg"), ("", "", "no face", "/p/empty.jpg"), ("1", "sad", "", "/p/c.jpg")]
    session = read_logs([log])
    assert session.events == 2 and session.skipped == 0
    # CSV logs only the photos without a face, so only JSONL knows how many photos there were
    assert session.photos == (3 if kind == "jsonl" else 0) and session.faceless == ["/p/empty.jpg"]
    out = CliRunner().invoke(cli, ["report", str(log), "--out", str(tmp_path / "r")])
    if out.exit_code == 0:  # charts need matplotlib
        assert "no face found in 1 photo(s)" in out.output
        assert "no face was found in 1: /p/empty.jpg" in (tmp_path / "r" / "index.html").read_text()


def test_a_log_of_photos_without_any_face_says_so(tmp_path):
    log = tmp_path / "photos.jsonl"
    sink = JsonlSink(log, EMOTIONS)
    sink.write(FrameResult(Frame(0, np.zeros((4, 4, 3), np.uint8), T0, "x.jpg", file="x.jpg", still=True), [], EMOTIONS))
    sink.close()
    with pytest.raises(DataError, match=r"no face was found in any of its 1 photo"):
        read_logs([log])


def test_a_large_photo_folder_log_keeps_the_overview_drawable(tmp_path):
    """2,000 faces in 2,000 photos: no per-face charts, and the overview shows the tracks with the most events."""
    pytest.importorskip("matplotlib")
    from fer_edge import report as R

    log = tmp_path / "many.jsonl"
    sink = JsonlSink(log, EMOTIONS)
    for index in range(2000):
        file = f"/p/{index:04d}.jpg"
        face = FaceResult(1, (10, 20, 80, 80), probs_for("happy"), "happy", 0.7)
        sink.write(FrameResult(Frame(index, np.zeros((4, 4, 3), np.uint8), T0 + index * 0.01, file, file=file, still=True),
                               [face], EMOTIONS))
    sink.close()
    result = build_report([log], tmp_path / "out")
    assert len(result["rows"]) == 2000 and result["tracks"] == {}
    from PIL import Image

    with Image.open(result["overview"]) as im:
        assert im.size[1] < 100 * (0.9 + 0.42 * R.MAX_OVERVIEW_BARS) + 200  # 60 bars tall, not 2,000
