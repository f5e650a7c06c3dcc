"""`fer-edge` as a user runs it: subprocesses, exit codes, one-line errors, SIGTERM, bench, config."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_edge.loop import STAGES

FER_EDGE = [sys.executable, "-m", "fer_edge.cli"]


def env_without_display() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "NOTIFY_SOCKET")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def fer_edge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FER_EDGE, *args], capture_output=True, text=True, timeout=timeout, env=env_without_display())


def test_runtime_imports_no_tensorflow():
    code = ("import fer_edge.loop, fer_edge.cli, fer_edge.sources, fer_edge.detectors, fer_edge.classifier, "
            "fer_edge.bench, fer_edge.detectors.haar, fer_edge.detectors.blazeface; import sys; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_help_shows_run_options_and_commands():
    proc = fer_edge("--help")
    assert proc.returncode == 0
    out = proc.stdout
    for option in ("--camera", "--picamera", "--source", "--config", "--model", "--threads", "--edgetpu",
                   "--detector", "--detector-model", "--detect-every", "--min-face", "--scale", "--smoothing",
                   "--ema-alpha", "--window", "--min-confidence", "--log", "--csv", "--display", "--mqtt-host",
                   "--mqtt-port", "--mqtt-topic", "--metrics-port", "--save-frames", "--max-frames", "--verbose",
                   "--quiet"):
        assert option in out, option
    assert "Commands:" in out and "bench" in out and "run" in out
    assert "Exit codes:" in out and "4  the source could not be opened" in out
    assert fer_edge("run", "--help").returncode == 0
    assert "--frames" in fer_edge("bench", "--help").stdout


def test_camera_that_is_not_there_exits_4_with_one_line():
    proc = fer_edge("--camera", "63")
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot open camera 63: ")


def test_display_without_a_display_exits_6_with_one_line(face_clip, tiny_tflite_model):
    proc = fer_edge("--source", str(face_clip.path), "--model", str(tiny_tflite_model), "--display")
    assert proc.returncode == 6
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --display needs"), proc.stderr


def test_usage_and_input_errors(face_clip, tmp_path):
    proc = fer_edge()
    assert proc.returncode == 2 and "no source" in proc.stderr
    proc = fer_edge("--source", str(face_clip.path), "--model", str(tmp_path / "missing.tflite"))
    assert proc.returncode == 3 and proc.stderr.strip().endswith(f"model not found: {tmp_path / 'missing.tflite'}")
    proc = fer_edge("--source", str(tmp_path / "nope.mp4"))
    assert proc.returncode == 4 and "no such file" in proc.stderr
    proc = fer_edge("--source", str(face_clip.path), "--detect-every", "0")
    assert proc.returncode == 2


def test_missing_default_model_says_how_to_make_one(tmp_path, monkeypatch):
    import fer_edge_models
    from fer_edge.errors import ModelError
    from fer_edge.loop import resolve_model

    missing = tmp_path / "models" / "fer_default_int8.tflite"
    monkeypatch.setattr(fer_edge_models, "DEFAULT_MODEL", missing)
    with pytest.raises(ModelError) as err:
        resolve_model(None)
    message = str(err.value)
    assert str(missing) in message and "fer-convert" in message and "--int8" in message


def test_run_logs_jsonl_and_csv_and_prints_its_config(face_clip, tiny_tflite_model, tmp_path, read_jsonl):
    jsonl, csv = tmp_path / "e.jsonl", tmp_path / "e.csv"
    proc = fer_edge("--source", str(face_clip.path), "--model", str(tiny_tflite_model),
                    "--log", str(jsonl), "--log", str(csv), "--min-confidence", "0.99")
    assert proc.returncode == 0, proc.stderr
    assert "effective config:" in proc.stderr and f"jsonl={jsonl}" in proc.stderr
    events = [e for e in read_jsonl(jsonl) if e["type"] == "event"]
    assert set(face_clip.frames_where("full")) <= {e["frame"] for e in events}
    assert {e["emotion"] for e in events} == {"uncertain"}  # random weights are never 99% sure
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("time,frame,track_id") and len(rows) == len(events) + 1


def test_run_from_a_config_file(face_clip, tiny_tflite_model, tmp_path, read_jsonl):
    log = tmp_path / "from_config.jsonl"
    config = tmp_path / "config.toml"
    config.write_text(
        f'max_frames = 20\n[source]\npath = "{face_clip.path}"\n[classifier]\nmodel = "{tiny_tflite_model}"\n'
        f'[log]\njsonl = "{log}"\nsummary_every_s = 0\n[tracker]\nsmoothing = "window"\nwindow = 3\n'
    )
    proc = fer_edge("run", "--config", str(config), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") <= 1  # -q: no config block, no info lines
    frames = [e["frame"] for e in read_jsonl(log) if e["type"] == "event"]
    assert frames and max(frames) < 20
    bad = tmp_path / "bad.toml"
    bad.write_text("[source]\ncamra = 0\n")
    proc = fer_edge("--config", str(bad), "--camera", "0")
    assert proc.returncode == 3 and "unknown key 'camra'" in proc.stderr


def test_sigterm_exits_0_with_a_complete_log(face_clip, tiny_tflite_model, tmp_path):
    log = tmp_path / "events.jsonl"
    proc = subprocess.Popen([*FER_EDGE, "--source", str(face_clip.path), "--loop", "--model", str(tiny_tflite_model),
                             "--log", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_without_display())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until it is well into the second pass of the clip
            if log.exists() and log.read_text().count("\n") > 50:
                break
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.2)
        else:
            pytest.fail("no events logged in 60 s")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped (SIGTERM)" in err
    text = log.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line is complete JSON
    events = [r for r in records if r["type"] == "event"]
    assert len(events) > 50
    assert records[-1]["type"] == "summary"  # the summary sink flushed its last word on the way out


def test_bench_writes_json_with_every_stage(face_clip, tiny_tflite_model, tmp_path):
    out = tmp_path / "bench.json"
    proc = fer_edge("bench", "--source", str(face_clip.path), "--model", str(tiny_tflite_model),
                    "--frames", "60", "--warmup", "5", "--json", str(out), "--log", str(tmp_path / "b.jsonl"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["stages_ms"]) == set(STAGES)
    for stage in STAGES:
        assert set(report["stages_ms"][stage]) >= {"p50", "p95"}
    assert report["frames"] == 60 and report["fps"] > 0 and report["peak_rss_mb"] > 10
    assert 0 < report["faces_per_frame"] < 1  # the clip has empty frames
    assert report["stages_ms"]["detect"]["p50"] > 0 and report["stages_ms"]["sink"]["p50"] > 0
    for word in ("p50 ms", "p95 ms", "frames/s", "peak RSS", "faces/frame", *STAGES):
        assert word in proc.stdout
    assert Path(tmp_path / "b.jsonl").exists()
