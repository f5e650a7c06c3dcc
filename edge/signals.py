"""SIGINT / SIGTERM from the moment `fer-edge run` starts, before the frame loop owns them.

Start-up takes a while (OpenCV, the interpreter, the model, the camera). Without this, a SIGTERM
from systemd in that window killed the process with the default action (exit 143) and a Ctrl-C
raised KeyboardInterrupt somewhere in an import ("aborted", exit 130). `catch_early()` is called
first thing by the CLI: it only remembers the signal. When the loop starts,
`loop.stop_on_signals` installs the real handler and, if a signal came early, stops at once:
nothing is processed, the logs are opened and closed cleanly, the exit code is 0 as for any stop
by signal. A second Ctrl-C while starting still interrupts at once (exit 130).

Only the main thread can own signal handlers; elsewhere (tests, threads) this does nothing.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

_received: list[str] = []


def _remember(signum: int, _frame: Any) -> None:
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and "SIGINT" in _received:
        raise KeyboardInterrupt  # an impatient second Ctrl-C
    _received.append(name)


def catch_early() -> bool:
    """Remember SIGINT/SIGTERM until the loop takes over; False where handlers cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _remember)
    return True


def pending() -> str | None:
    """The first signal received since `catch_early()` ("SIGTERM", "SIGINT"), or None."""
    return _received[0] if _received else None


def clear() -> None:
    _received.clear()
