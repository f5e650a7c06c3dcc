"""--display: refused with a DeviceError (exit 6) and a clear line when no window can work; never aborts.

The project installs opencv-python-headless, which has no GUI: a real window cannot be opened with it,
so the window test at the bottom runs only where someone installed a GUI build of OpenCV.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_edge.errors import DeviceError
from fer_edge.sinks import display
from fer_edge.sinks.display import DisplaySink, display_available, opencv_gui_backend

from .test_sinks import T0, TWO_FACES, make_result

HEADLESS = opencv_gui_backend() is None


@pytest.fixture
def no_desktop(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_no_display_env_is_refused_clearly(no_desktop):
    ok, why = display_available()
    assert not ok
    assert why.startswith("--display needs a desktop session and a GUI build of OpenCV")
    assert "DISPLAY" in why and "\n" not in why
    with pytest.raises(DeviceError) as err:
        DisplaySink()
    assert err.value.exit_code == 6
    assert str(err.value) == why


@pytest.mark.skipif(not HEADLESS, reason="this OpenCV build has a GUI")
def test_headless_opencv_is_refused_naming_the_gui(monkeypatch):
    monkeypatch.setattr(display, "desktop_session", lambda: (True, "DISPLAY=:0"))  # pretend a desktop
    ok, why = display_available()
    assert not ok
    assert "GUI" in why and "opencv-python-headless" in why
    assert "DISPLAY" not in why.split(":", 1)[1], "only the missing part is named"
    with pytest.raises(DeviceError, match="no GUI backend"):
        DisplaySink()


def test_dead_display_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":187")  # no X server there
    ok, why = display.desktop_session()
    assert not ok and "DISPLAY=:187" in why and "no display server answers" in why
    monkeypatch.setenv("DISPLAY", "127.0.0.1:187")  # nor over TCP
    assert display.desktop_session()[0] is False
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-9")
    assert display.desktop_session()[0] is False
    (tmp_path / "wayland-9").touch()
    assert display.desktop_session() == (True, "WAYLAND_DISPLAY=wayland-9")


@pytest.mark.parametrize("info, expected", [
    ("  GUI:                           NONE\n", None),
    ("  GUI:                           GTK3\n    GTK+:                        YES (ver 3.24.33)\n", "GTK3"),
    ("  GUI:                           QT5\n    QT:                          YES (ver 5.15.2 )\n", "QT5"),
    ("  GUI:                           WIN32UI\n    Win32 UI:                    YES\n", "WIN32UI"),
    ("  GUI:                           COCOA\n    Cocoa:                       YES\n", "COCOA"),
    # OpenCV 3.x style: an empty GUI: line, the backends below it
    ("  GUI: \n    GTK+ 2.x:                    YES (ver 2.24.32)\n", "GTK+ 2.x"),
    ("  GUI:\n    Cocoa:                       NO\n    GTK+:                        NO\n", None),
    ("Video I/O:\n    GTK+:                        YES (ver 3.22)\n", "GTK+"),
    ("", None),
])
def test_gui_backend_parsing(info, expected):
    assert opencv_gui_backend(info) == expected


def _free_x_display() -> int:
    for n in range(120, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    pytest.skip("no free X display number")


@pytest.fixture
def xvfb():
    """A real X server (Xvfb) on a free display; skipped when the xvfb package is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb not installed (apt-get install -y xvfb)")
    n = _free_x_display()
    proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.communicate()[1].decode(errors="replace")[-300:]
            pytest.skip(f"Xvfb did not start: {err}")
        time.sleep(0.05)
    yield f":{n}"
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_REFUSE_SCRIPT = """
import sys
from fer_edge.config import RunConfig
from fer_edge.errors import FerError
from fer_edge.sinks import build_sinks
cfg = RunConfig()
cfg.display.enabled = True
try:
    sinks = build_sinks(cfg, ("happy", "sad"))
except FerError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
print("window opened")
"""


@pytest.mark.skipif(not HEADLESS, reason="this OpenCV build has a GUI")
def test_xvfb_desktop_with_headless_opencv_is_refused_without_abort(xvfb):
    env = dict(os.environ, DISPLAY=xvfb)
    env.pop("WAYLAND_DISPLAY", None)
    assert subprocess.run([sys.executable, "-c", "from fer_edge.sinks.display import desktop_session as d; "
                           "assert d()[0], d()"], env=env).returncode == 0, "Xvfb counts as a desktop"
    proc = subprocess.run([sys.executable, "-c", _REFUSE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 6, (proc.returncode, proc.stderr)  # not -6 (SIGABRT), not a traceback
    assert proc.stderr.startswith("error: --display needs a desktop session and a GUI build of OpenCV")
    assert "no GUI backend" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(HEADLESS, reason="opencv-python-headless has no GUI: a real window cannot be tested with it")
def test_real_window_under_xvfb(xvfb, monkeypatch):
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    sink = DisplaySink("fer-edge-test")
    for i in range(3):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    assert sink.stats["shown"] == 3 and sink.should_stop is False
    import cv2

    cv2.destroyWindow("fer-edge-test")  # what the user closing the window leaves behind
    sink.write(make_result(3, T0 + 3, TWO_FACES))
    assert sink.should_stop is True, "a closed window asks the loop to stop"
    assert sink.stats["shown"] == 3, "and is not opened again"
    sink.close()
    sink.close()
