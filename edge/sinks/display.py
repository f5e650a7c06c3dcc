"""--display: a live window with the overlay; opened only when asked and only when it can work.

A window needs two things: a desktop session to draw on (DISPLAY or WAYLAND_DISPLAY on Linux, and
something answering there) and an OpenCV build with a GUI backend (GTK, Qt, Cocoa, Win32).
The project installs opencv-python-headless, which has none; on a GUI build without a display,
cv2.imshow can abort the whole process (Qt's "could not connect to display"), losing unflushed
logs. So `DisplaySink` checks both first with `display_available()` and refuses with a DeviceError
(exit 6) and one line naming what is missing, and never calls cv2.imshow otherwise.

Stopping: pressing q or Esc in the window, or closing it, sets `should_stop`; the loop polls it
after each frame and ends the run as it would on SIGINT (logs flushed, exit 0).
"""
from __future__ import annotations

import os
import re
import socket
import sys
from importlib import metadata

import cv2

from ..errors import DeviceError
from ..overlay import draw_overlay
from ..records import FrameResult
from . import Sink

_GUI_LINE = re.compile(r"^[ \t]*GUI:[ \t]*(\S+)", re.MULTILINE)
_BACKEND_LINE = re.compile(r"^[ \t]*(GTK\+(?: [23]\.x)?|GTK|QT|Qt|Cocoa|Win32 UI|WIN32UI|Wayland):[ \t]*YES", re.MULTILINE)
_CV2_DISTRIBUTIONS = ("opencv-python", "opencv-contrib-python", "opencv-python-headless",
                      "opencv-contrib-python-headless")


def opencv_gui_backend(build_info: str | None = None) -> str | None:
    """The GUI backend OpenCV was built with ("GTK3", "QT5", "COCOA", "WIN32UI", ...), or None."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    match = _GUI_LINE.search(info)
    if match:
        value = match.group(1)
        return None if value.upper() == "NONE" else value
    backend = _BACKEND_LINE.search(info)  # older builds list the backends without a GUI: summary
    return backend.group(1) if backend else None


def _opencv_distribution() -> str:
    names = []
    for name in _CV2_DISTRIBUTIONS:
        try:
            names.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(names) or f"OpenCV {cv2.__version__}"


def _x11_answers(display: str, timeout: float = 0.5) -> bool:
    """Whether an X server listens at DISPLAY ("[host]:N[.S]"); unix socket or TCP 6000+N."""
    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".", 1)[0])
    except ValueError:
        return False
    if host in ("", "unix") or host.startswith("/"):
        path = host if host.startswith("/") else f"/tmp/.X11-unix/X{number}"
        candidates = [path, "\0" + path] if sys.platform.startswith("linux") else [path]  # abstract socket too
        for address in candidates:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(address)
                    return True
                except OSError:
                    continue
        return False
    try:
        with socket.create_connection((host, 6000 + number), timeout=timeout):
            return True
    except OSError:
        return False


def _wayland_answers(name: str) -> bool:
    path = name if name.startswith("/") else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), name)
    return os.path.exists(path)


def desktop_session() -> tuple[bool, str]:
    """(True, where) when a desktop answers; (False, why) otherwise. Only Linux/BSD need checking."""
    if sys.platform in ("win32", "darwin"):
        return True, sys.platform
    wayland = os.environ.get("WAYLAND_DISPLAY")
    x11 = os.environ.get("DISPLAY")
    if not wayland and not x11:
        return False, "neither DISPLAY nor WAYLAND_DISPLAY is set (no desktop session: run it on the desktop, or use ssh -X)"
    if wayland and _wayland_answers(wayland):
        return True, f"WAYLAND_DISPLAY={wayland}"
    if x11 and _x11_answers(x11):
        return True, f"DISPLAY={x11}"
    shown = " and ".join(f"{k}={v}" for k, v in (("DISPLAY", x11), ("WAYLAND_DISPLAY", wayland)) if v)
    return False, f"{shown} is set but no display server answers there"


def display_available() -> tuple[bool, str]:
    """(True, description) when a window can be opened; else (False, one line saying what is missing)."""
    problems = []
    session_ok, session = desktop_session()
    if not session_ok:
        problems.append(session)
    backend = opencv_gui_backend()
    if backend is None:
        problems.append(f"the installed {_opencv_distribution()} has no GUI backend (GUI: NONE in "
                        f"cv2.getBuildInformation()); a GUI build (opencv-python) is needed for a window")
    if problems:
        return False, "--display needs a desktop session and a GUI build of OpenCV: " + "; ".join(problems)
    return True, f"{session}, OpenCV GUI {backend}"


class DisplaySink(Sink):
    """Shows each frame with its overlay; q, Esc or closing the window sets `should_stop`."""

    def __init__(self, window: str = "fer-edge"):
        super().__init__()
        ok, why = display_available()
        if not ok:
            raise DeviceError(why)
        self.window = window
        try:
            cv2.namedWindow(window, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise DeviceError(f"--display: cannot open a window ({why}): {exc}") from None
        self.should_stop = False
        self._shown = False
        self.stats = {"shown": 0}

    def write(self, result: FrameResult) -> None:
        if self.should_stop:
            return
        # a window the user closed reports not visible (or, with Qt, no window at all: cv2.error);
        # imshow would open it again
        if self._shown:
            try:
                visible = cv2.getWindowProperty(self.window, cv2.WND_PROP_VISIBLE) >= 1
            except cv2.error:
                visible = False
            if not visible:
                self.should_stop = True
                return
        cv2.imshow(self.window, draw_overlay(result.frame.image, result))
        self._shown = True
        self.stats["shown"] += 1
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            self.should_stop = True

    def _close(self) -> None:
        try:
            cv2.destroyWindow(self.window)
            cv2.waitKey(1)
        except cv2.error:
            pass

    def __repr__(self) -> str:
        return f"DisplaySink({self.window!r})"
