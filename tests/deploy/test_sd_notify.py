"""The service protocol end to end: `fer-edge run --config ...` (what the unit's ExecStart runs),
started the way systemd starts a Type=notify service with WatchdogSec= (NOTIFY_SOCKET and
WATCHDOG_USEC in its environment), must send READY=1, WATCHDOG=1 and STOPPING=1 to the socket --
both when the source ends and when systemd stops it with SIGTERM."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .conftest import REPO


def fer_edge_command() -> list[str]:
    exe = shutil.which("fer-edge") or str(Path(sys.executable).parent / "fer-edge")
    if not Path(exe).is_file():
        pytest.skip("the fer-edge console script is not installed (pip install -e .)")
    return [exe]


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET, read by a thread.

    It must be drained while the service runs, as systemd does: a unix datagram queue holds only
    a few messages (net.unix.max_dgram_qlen), after which the sender's sendto() blocks.
    """

    def __init__(self) -> None:
        # sun_path is limited to 108 bytes: pytest's tmp_path can be longer.
        self.dir = tempfile.mkdtemp(prefix="fer-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.extend(data.decode().splitlines())

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, message: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if message in self.snapshot():
                return True
            time.sleep(0.02)
        return message in self.snapshot()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


def clip_path(face_clip) -> Path:
    """The runtime fixtures' clip: a Clip with .path (or an older (path, visible) tuple)."""
    return Path(getattr(face_clip, "path", None) or face_clip[0])


def write_config(path: Path, model: Path, clip: Path, *, loop: bool, max_frames: int | None, log: Path) -> Path:
    lines = []
    if max_frames is not None:
        lines.append(f"max_frames = {max_frames}")
    lines += [
        "[source]", f'path = "{clip}"', f"loop = {'true' if loop else 'false'}",
        "[classifier]", f'model = "{model}"',
        "[log]", f'jsonl = "{log}"', "summary_every_s = 0.0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def service_env(notify: NotifySocket, watchdog_usec: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WATCHDOG_PID", None)  # systemd sets it to the main PID; absent means "this process"
    env.update(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(watchdog_usec), PYTHONUNBUFFERED="1")
    return env


def test_ready_watchdog_stopping_when_the_source_ends(notify_socket, tiny_tflite_model, face_clip, tmp_path):
    clip = clip_path(face_clip)
    log = tmp_path / "events.jsonl"
    cfg = write_config(tmp_path / "config.toml", tiny_tflite_model, clip, loop=False, max_frames=40, log=log)
    # 30 ms watchdog -> the runtime must ping every ~10 ms: several pings even in a short run.
    proc = subprocess.Popen([*fer_edge_command(), "run", "--config", str(cfg)],
                            env=service_env(notify_socket, 30_000), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    notify_socket.wait_for("STOPPING=1", timeout=2)
    msgs = notify_socket.snapshot()
    assert proc.returncode == 0, out
    assert "READY=1" in msgs, (msgs, out)
    assert "WATCHDOG=1" in msgs, (msgs, out)
    assert "STOPPING=1" in msgs, (msgs, out)
    print("notify messages:", msgs)
    ready = msgs.index("READY=1")
    assert msgs.index("WATCHDOG=1") > ready, msgs
    assert msgs[-1] == "STOPPING=1" or msgs[-1].startswith("STATUS="), msgs  # STOPPING comes last
    assert log.is_file() and log.read_text().strip(), "no events logged"


def test_sigterm_stops_cleanly_with_stopping(notify_socket, tiny_tflite_model, face_clip, tmp_path):
    """`systemctl stop`: SIGTERM to the main process -> STOPPING=1, logs flushed, exit status 0."""
    clip = clip_path(face_clip)
    log = tmp_path / "events.jsonl"
    cfg = write_config(tmp_path / "config.toml", tiny_tflite_model, clip, loop=True, max_frames=None, log=log)
    proc = subprocess.Popen([*fer_edge_command(), "run", "--config", str(cfg)],
                            env=service_env(notify_socket, 1_000_000), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert notify_socket.wait_for("READY=1", timeout=60), ("no READY=1 within 60 s", notify_socket.snapshot())
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    notify_socket.wait_for("STOPPING=1", timeout=2)
    assert proc.returncode == 0, out
    assert "STOPPING=1" in notify_socket.snapshot(), (notify_socket.snapshot(), out)
    assert log.read_text().endswith("\n"), "the event log was not flushed to a line boundary"
