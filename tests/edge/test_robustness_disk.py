"""A full disk (ENOSPC) never crashes the runtime nor leaves half a line; dropped events are counted.

Two ways: a fake disk (os.write in the event-log module stops at a capacity, writing part of a
block first, exactly as a filling file system does) that runs everywhere, and a real tmpfs of a
few kB when the tests run as root (mount is allowed): `fer-edge --loop` fills it, keeps running,
resumes when the tmpfs is grown, and exits 0 on SIGTERM.
"""
from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fer_edge.contract import EMOTIONS
from fer_edge.sinks.eventlog import CsvSink, JsonlSink
from fer_edge.sinks.metrics import MetricsSink
from fer_edge.sinks.summary import SummarySink

from .test_cli import FER_EDGE, env_without_display
from .test_sinks import T0, TWO_FACES, make_result


class FakeDisk:
    """os.write for the event-log module: at most `capacity` bytes per file, then ENOSPC.

    A write that does not fit writes what fits first (a partial write), as the kernel does; the
    next one raises ENOSPC. ftruncate frees space, as on a real disk."""

    def __init__(self, monkeypatch, capacity: int):
        self.capacity = capacity
        self.enospc = 0
        real = os.write

        def write(fd, data):
            free = self.capacity - os.fstat(fd).st_size
            if free <= 0:
                self.enospc += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, bytes(data[:free]))

        monkeypatch.setattr("fer_edge.sinks.eventlog.os.write", write)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def whole_jsonl(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the log ends in half a line"
    return [json.loads(line) for line in text.splitlines()]  # every line is complete JSON


def test_a_full_disk_drops_whole_frames_counts_them_warns_once_a_minute_and_resumes(tmp_path, monkeypatch, caplog):
    disk = FakeDisk(monkeypatch, capacity=3000)
    clock = Clock()
    caplog.set_level(logging.WARNING, logger="fer_edge.sinks.eventlog")
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, EMOTIONS, max_bytes=0, fsync_every_s=0, clock=clock)
    metrics = MetricsSink(EMOTIONS, port=0, logs=[sink])
    try:
        for i in range(40):  # ~700 bytes a frame: the disk is full after 4 frames
            sink.write(make_result(i, T0 + i, TWO_FACES))
            clock.t += 1.0  # 40 s: less than a minute
        assert disk.enospc > 0
        events = whole_jsonl(path)
        assert 0 < len(events) < 80
        assert sink.stats["events"] == len(events) and sink.stats["dropped"] == 80 - len(events)
        warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once a minute, not once a frame
        assert "No space left on device" in warnings[0] and "resumes" in warnings[0]
        assert "events.jsonl: " in sink.health and "dropped (cannot write now)" in sink.health
        dropped = metrics.registry.get_sample_value("fer_edge_log_dropped_events_total", {"log": str(path)})
        assert dropped == sink.stats["dropped"]
        assert metrics.registry.get_sample_value("fer_edge_log_writable", {"log": str(path)}) == 0

        clock.t += 61.0
        sink.write(make_result(40, T0 + 40, TWO_FACES))
        assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 2  # a minute later

        disk.capacity = 10**9  # space returns: the very next frame is written
        before = sink.stats["events"]
        for i in range(41, 45):
            sink.write(make_result(i, T0 + i, TWO_FACES))
        assert sink.stats["events"] == before + 8
        assert any("writing again" in r.getMessage() for r in caplog.records)
        assert sink.health.endswith("(writing again)")
        assert metrics.registry.get_sample_value("fer_edge_log_writable", {"log": str(path)}) == 1
        events = whole_jsonl(path)
        assert [e["frame"] for e in events][-8:] == [41, 41, 42, 42, 43, 43, 44, 44]
        assert len(events) == sink.stats["events"]
    finally:
        sink.close()
        metrics.close()


def test_the_summary_line_is_dropped_whole_too(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, EMOTIONS, fsync_every_s=0)
    summary = SummarySink(EMOTIONS, every_s=0, jsonl=sink)
    sink.write(make_result(0, T0, TWO_FACES))
    summary.write(make_result(0, T0, TWO_FACES))
    disk = FakeDisk(monkeypatch, capacity=path.stat().st_size + 20)  # room for 20 bytes: not for a summary
    summary.close()  # writes the final summary: it does not fit
    sink.close()
    assert disk.enospc >= 1
    assert [r["type"] for r in whole_jsonl(path)] == ["event", "event"]
    assert sink.stats["records_dropped"] == 1


def test_starting_on_a_full_disk_and_rotating_into_one_keep_the_csv_whole(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="fer_edge.sinks.eventlog")
    disk = FakeDisk(monkeypatch, capacity=0)
    path = tmp_path / "events.csv"
    sink = CsvSink(path, EMOTIONS, max_bytes=1200, backups=1, fsync_every_s=0)  # the header does not fit
    for i in range(3):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    assert sink.stats["dropped"] == 6 and sink.stats["events"] == 0
    assert path.read_bytes() == b""
    disk.capacity = 1200  # room for the header and a few frames; rotation at 1200 bytes
    for i in range(3, 30):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    sink.close()
    files = [path, path.with_name("events.csv.1")]
    rows = []
    for f in files:
        text = f.read_text()
        assert text.endswith("\n")
        lines = list(csv.reader(text.splitlines()))
        assert lines[0][:3] == ["time", "frame", "track_id"]  # every file starts with the header
        assert all(len(line) == len(lines[0]) for line in lines)  # no half row
        rows += lines[1:]
    assert sink.stats["events"] >= len(rows) > 0  # events in files rotated away count too
    assert sink.stats["events"] + sink.stats["dropped"] == 60
    assert any("events written" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- a real tmpfs
@pytest.fixture
def tmpfs(tmp_path):
    """A 48 kB tmpfs mounted at tmp_path/full (root only); unmounted after the test."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root (the fake-disk tests above cover the same code)")
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_fer_edge_on_a_real_full_tmpfs_keeps_running_and_resumes(tmpfs, face_clip, tiny_tflite_model):
    jsonl, csv_path = tmpfs / "ev.jsonl", tmpfs / "ev.csv"
    proc = subprocess.Popen([*FER_EDGE, "--source", str(face_clip.path), "--loop", "--model", str(tiny_tflite_model),
                             "--detector", "haar", "--log", str(jsonl), "--log", str(csv_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_without_display())
    try:
        def size() -> int:
            return sum(p.stat().st_size for p in (jsonl, csv_path) if p.exists())

        deadline = time.monotonic() + 90
        while size() < 32_000:  # the 48 kB tmpfs is nearly full (each file wastes part of a page)
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, f"only {size()} bytes in 90 s"
            time.sleep(0.2)
        time.sleep(2.0)  # full for a while: frames are being dropped
        assert proc.poll() is None, proc.communicate()[1]
        full = jsonl.stat().st_size
        subprocess.run(["mount", "-o", "remount,size=4m", str(tmpfs)], check=True)  # space returns
        deadline = time.monotonic() + 60
        while jsonl.stat().st_size < full + 5_000:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "writing did not resume"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert err.count("cannot write (No space left on device)") == 2, err  # one per log, not one per frame
    assert "writing again" in err and "stopped (SIGTERM)" in err
    records = whole_jsonl(jsonl)
    assert records[-1]["type"] == "summary"  # space again: the final summary made it
    rows = list(csv.reader(csv_path.read_text().splitlines()))
    assert csv_path.read_text().endswith("\n") and all(len(r) == len(rows[0]) for r in rows)
    assert rows[0][:3] == ["time", "frame", "track_id"] and len(rows[0]) >= 9 + len(EMOTIONS)


def test_the_service_status_says_events_are_being_dropped(tmp_path, monkeypatch, face_clip, tiny_tflite_model,
                                                          notify_log):
    """systemd's STATUS= line (systemctl status) carries the count while the disk is full."""
    from fer_edge import notify
    from fer_edge.config import RunConfig
    from fer_edge.loop import run
    from fer_edge.notify import Notifier

    address, got = notify_log
    monkeypatch.setattr(notify, "STATUS_EVERY_S", 0.0)  # a STATUS with every frame
    FakeDisk(monkeypatch, capacity=2000)
    cfg = RunConfig()
    cfg.source.path = str(face_clip.path)
    cfg.classifier.model = str(tiny_tflite_model)
    cfg.detector.kind = "haar"
    cfg.log.jsonl = str(tmp_path / "events.jsonl")
    cfg.log.summary_every_s = 0
    summary = run(cfg, notifier=Notifier(env={"NOTIFY_SOCKET": address}))
    assert summary.frames == len(face_clip.states) and summary.stopped_by == "end of source"
    time.sleep(0.2)
    statuses = [m for _, m in got if "STATUS=" in m]
    assert any("events.jsonl: " in m and "events dropped (cannot write now)" in m for m in statuses), statuses[-3:]
    whole_jsonl(tmp_path / "events.jsonl")
