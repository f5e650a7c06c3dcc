"""Start-up edges of `fer-edge`: signals before the loop runs, flags before the command, two logs of a kind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from .test_cli import FER_EDGE, env_without_display, fer_edge


def config_file(tmp_path, clip, model, log, extra: str = "") -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'{extra}[source]\npath = "{clip}"\nloop = true\n[detector]\nkind = "haar"\n'
                    f'[classifier]\nmodel = "{model}"\n[log]\njsonl = "{log}"\nsummary_every_s = 0\n')
    return str(path)


def caught_signals(pid: int) -> int:
    """The process's mask of caught signals (SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


def wait_until_it_catches_sigterm(proc: subprocess.Popen, timeout: float = 30.0) -> float:
    """Poll until the process has a SIGTERM handler; returns how long that took."""
    t0 = time.monotonic()
    while not caught_signals(proc.pid) & (1 << (signal.SIGTERM - 1)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no SIGTERM handler"
        time.sleep(0.002)
    return time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_stops_cleanly_with_exit_0(sig, tmp_path, face_clip, tiny_tflite_model):
    """The signal arrives while OpenCV, the interpreter and the model are still loading: no frame is
    processed, the log is opened and closed, exit 0 (before: 143 for SIGTERM, "aborted"/130 for SIGINT)."""
    log = tmp_path / "events.jsonl"
    proc = subprocess.Popen([*FER_EDGE, "run", "--config", config_file(tmp_path, face_clip.path, tiny_tflite_model, log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_without_display())
    try:
        took = wait_until_it_catches_sigterm(proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert took < 5.0, f"the handler came only after {took:.1f}s"
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "aborted" not in err
    assert f"stopped ({sig.name}): 0 frames" in err, err
    # the log is opened and closed: at most the run's first line (which model and settings), no event
    assert log.exists() and [json.loads(line)["type"] for line in log.read_text().splitlines()] in ([], ["run"])


def test_flags_before_the_command_belong_to_it(tmp_path, face_clip, tiny_tflite_model):
    log = tmp_path / "events.jsonl"
    cfg = config_file(tmp_path, face_clip.path, tiny_tflite_model, log, extra="max_frames = 20\n")
    proc = fer_edge("-vv", "run", "--config", cfg)
    assert proc.returncode == 0, proc.stderr  # before: "unexpected extra argument (run)", exit 2
    assert "stopped (max frames): 20 frames" in proc.stderr
    assert [json.loads(line)["type"] for line in log.read_text().splitlines()]
    proc = fer_edge("-q", "run", "--config", cfg)
    assert proc.returncode == 0 and "effective config" not in proc.stderr
    proc = fer_edge("-vv", "bench", "--help")
    assert proc.returncode == 0 and "--frames" in proc.stdout
    proc = fer_edge("--source", "x.mp4", "run")  # a value before the command: left alone, a clear usage error
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_two_logs_of_the_same_kind_are_refused_clearly(tmp_path, face_clip, tiny_tflite_model):
    common = ["--source", str(face_clip.path), "--model", str(tiny_tflite_model), "--max-frames", "3"]
    a1, a2, c1, c2 = (tmp_path / n for n in ("a1.jsonl", "a2.jsonl", "c1.csv", "c2.csv"))
    for args, kind in ((["--log", str(a1), "--log", str(a2)], "JSON Lines"),
                       (["--log", str(c1), "--csv", str(c2)], "CSV"),
                       (["--log", str(c1), "--log", str(c2)], "CSV")):
        proc = fer_edge(*common, *args)
        assert proc.returncode == 2, proc.stderr
        assert f"two {kind} event logs given" in proc.stderr and "one JSONL and one CSV log at most" in proc.stderr
        assert not any(p.exists() for p in (a1, a2, c1, c2))  # nothing half-done
    proc = fer_edge(*common, "--log", str(a1), "--csv", str(a1))
    assert proc.returncode == 2 and "the same file" in proc.stderr
    # one of each kind, and the same file named twice, are fine
    proc = fer_edge(*common, "--log", str(a1), "--log", str(a1), "--log", str(c1))
    assert proc.returncode == 0, proc.stderr
    assert a1.exists() and c1.exists()
