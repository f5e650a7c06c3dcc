"""systemd notifications for the `Type=notify` service: READY, WATCHDOG, STATUS, STOPPING.

Only active when systemd started us (NOTIFY_SOCKET is set); otherwise every call is a cheap no-op.

* READY=1 once the pipeline is set up and the first frame went through (systemd then considers
  the service started; `systemctl start` returns).
* WATCHDOG=1 at least three times per WatchdogSec (WATCHDOG_USEC), from the frame loop only:
  only a frame that went through feeds the watchdog, so a hung loop, or a source that stalls or
  never delivers a frame, gets the service restarted (waiting for a frame sends STATUS only).
* STATUS=... with the frame rate every few seconds (shown by `systemctl status`).
* STOPPING=1 when the loop ends.

Uses the `sdnotify` package when installed, else writes the datagram itself.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0


class _RawNotifier:
    """Minimal sd_notify: one datagram to $NOTIFY_SOCKET (abstract socket names start with '@')."""

    def __init__(self, address: str) -> None:
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)  # a stuck receiver must never stall the frame loop

    def notify(self, state: str) -> None:
        self.sock.sendto(state.encode(), self.address)


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        self.enabled = self.address is not None
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if self.enabled and usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_s = int(usec) / 1e6
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r (not an integer)", usec)
        #: seconds between WATCHDOG=1 pings: a third of WatchdogSec (systemd asks for at least half)
        self.ping_every_s = self.watchdog_s / 3.0 if self.watchdog_s else None
        self._sender = None
        if self.enabled:
            self._sender = self._make_sender(self.address, from_environ=env is os.environ)
        self.failures = 0
        self._last_ping = 0.0
        self._last_status = 0.0
        self.ready_sent = False

    @staticmethod
    def _make_sender(address: str, from_environ: bool):
        if from_environ:  # sdnotify reads $NOTIFY_SOCKET itself
            try:
                import sdnotify

                sender = sdnotify.SystemdNotifier(debug=True)  # debug: errors raise, and we log them
                sender.socket.setblocking(False)  # a stuck receiver must never stall the frame loop
                return sender
            except ImportError:
                pass
            except OSError as exc:
                log.warning("cannot reach systemd's notify socket %s: %s", address, exc)
                return None
        return _RawNotifier(address)

    def send(self, state: str) -> None:
        if self._sender is None:
            return
        try:
            self._sender.notify(state)
        except OSError as exc:  # systemd gone, or its queue full: drop it, never stall or stop the loop
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.warning("sd_notify %r failed (%d so far): %s", state.split("=")[0], self.failures, exc)

    def ready(self, status: str | None = None) -> None:
        if self.ready_sent:
            return
        self.ready_sent = True
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))
        self._last_ping = self._last_status = time.monotonic()

    def tick(self, status: "str | Callable[[], str] | None" = None, watchdog: bool = True) -> None:
        """Called every frame: pings the watchdog and sends STATUS when due. While waiting for a
        frame the loop calls it with watchdog=False (STATUS only: no frame, no ping).

        `status` may be a callable, so the per-frame call builds no string unless one is sent."""
        if self._sender is None:
            return
        now = time.monotonic()
        if watchdog and self.ping_every_s is not None and now - self._last_ping >= self.ping_every_s:
            self._last_ping = now
            self.send("WATCHDOG=1")
        if status is not None and now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.send(f"STATUS={status() if callable(status) else status}")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))
