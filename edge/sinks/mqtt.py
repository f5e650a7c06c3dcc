"""MQTT: publish every event (the JSONL event object, as JSON) to a broker, never stalling the loop.

Topics, for `topic = "fer-edge/events"` (the default):

    fer-edge/events            one message per face per frame (per_track = true: fer-edge/events/<track_id>)
    fer-edge/status            "online" when connected, "offline" at close and, as the broker's
                               last will, when the connection dies without a goodbye; retained, QoS 1

(the status topic is the event topic's parent + "/status", or "<topic>/status" for a one-level topic,
so a subscription to "fer-edge/events/#" sees events only).

paho-mqtt 2.x with CallbackAPIVersion.VERSION2 and its own network thread (loop_start): connecting,
reconnecting (backoff 1 s doubling to 30 s) and sending all happen there. `write()` only queues:
while the client is not connected, or when more than `max_pending` messages wait to be sent (a
broker that stopped reading), the events are dropped and counted instead of piling up in memory.
`stats`: published, dropped, connects, reconnects, connect_failures, connected (0/1).

TLS (`tls = true`, `--mqtt-tls`): the broker's certificate is verified against `ca_file` (or the
system's CAs) and its host name checked; `cert_file` / `key_file` add a client certificate for a
broker that requires one. The port defaults to 8883 with TLS, 1883 without. A missing or unreadable
certificate file is a ConfigError at start (exit 3); a broker whose certificate does not verify is a
connection failure, retried in the background like an unreachable broker. Credentials
(username/password) without TLS travel in clear text: a warning says so.
"""
from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..config import MqttConfig
from ..errors import ConfigError
from ..records import FrameResult
from . import Sink
from .eventlog import dumps, event_count, event_records

log = logging.getLogger(__name__)


def status_topic(topic: str) -> str:
    parent, sep, _ = topic.rstrip("/").rpartition("/")
    return f"{parent}/status" if sep and parent else f"{topic.rstrip('/')}/status"


class MqttSink(Sink):
    def __init__(self, cfg: MqttConfig, labels: tuple[str, ...], max_pending: int = 1000,
                 reconnect_max_s: int = 30):
        super().__init__()
        if not cfg.host:
            raise ConfigError("mqtt: no host given")
        if cfg.qos not in (0, 1, 2):
            raise ConfigError(f"mqtt: qos must be 0, 1 or 2, not {cfg.qos!r}")
        self.cfg = cfg
        self.port = int(cfg.port) if cfg.port else (8883 if cfg.tls else 1883)
        self.labels = tuple(labels)
        self.topic = cfg.topic.rstrip("/")
        self.status_topic = status_topic(self.topic)
        self.max_pending = int(max_pending)
        self._lock = threading.Lock()
        self._connected = False
        self._queued = 0  # events handed to paho (frame-loop thread only)
        self._sent = 0  # of those, written to the socket (network thread only)
        self.stats = {"published": 0, "dropped": 0, "connects": 0, "reconnects": 0, "connect_failures": 0,
                      "connected": 0}

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id or "")
        if cfg.tls:
            self._set_tls(client, cfg)
        elif cfg.ca_file or cfg.cert_file or cfg.key_file:
            raise ConfigError("mqtt: ca_file/cert_file/key_file are set but tls is off (set tls = true, or --mqtt-tls)")
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
            if not cfg.tls:
                log.warning("mqtt: the username and password go to %s in clear text; use TLS (--mqtt-tls)", cfg.host)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
        client.max_queued_messages_set(max_pending)
        client.connect_timeout = 5.0
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client
        try:
            client.connect_async(cfg.host, self.port, keepalive=int(cfg.keepalive))
        except ValueError as exc:
            raise ConfigError(f"mqtt: {exc}") from None
        client.loop_start()
        log.info("mqtt: publishing to %s:%s%s topic %s (status %s)", cfg.host, self.port, " (TLS)" if cfg.tls else "",
                 self.topic, self.status_topic)

    @staticmethod
    def _set_tls(client: mqtt.Client, cfg: MqttConfig) -> None:
        for what, path in (("ca_file", cfg.ca_file), ("cert_file", cfg.cert_file), ("key_file", cfg.key_file)):
            if path and not Path(path).expanduser().is_file():
                raise ConfigError(f"mqtt: {what} not found: {path}")
        if cfg.key_file and not cfg.cert_file:
            raise ConfigError("mqtt: key_file is set without cert_file (the client certificate)")
        try:
            client.tls_set(ca_certs=str(Path(cfg.ca_file).expanduser()) if cfg.ca_file else None,
                           certfile=str(Path(cfg.cert_file).expanduser()) if cfg.cert_file else None,
                           keyfile=str(Path(cfg.key_file).expanduser()) if cfg.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"mqtt: cannot set up TLS with ca_file={cfg.ca_file} cert_file={cfg.cert_file} "
                              f"key_file={cfg.key_file}: {exc}") from None

    # ---- network thread -------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            with self._lock:
                self.stats["connect_failures"] += 1
            log.warning("mqtt: broker %s:%s refused the connection: %s", self.cfg.host, self.port, reason_code)
            return
        with self._lock:
            self._connected = True
            self.stats["connected"] = 1
            self.stats["connects"] += 1
            if self.stats["connects"] > 1:
                self.stats["reconnects"] += 1
        client.publish(self.status_topic, "online", qos=1, retain=True)
        log.info("mqtt: connected to %s:%s", self.cfg.host, self.port)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            self.stats["connect_failures"] += 1
            first = self.stats["connect_failures"] == 1
        (log.warning if first else log.debug)("mqtt: cannot reach %s:%s%s; retrying in the background",
                                              self.cfg.host, self.port,
                                              " (or the TLS handshake failed: check ca_file and the broker's "
                                              "certificate host name)" if self.cfg.tls else "")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            self.stats["connected"] = 0
            if self.cfg.qos == 0:  # QoS 0 messages not yet written are discarded by paho on reconnect
                lost = max(0, self._queued - self._sent)
                self.stats["dropped"] += lost
                self.stats["published"] -= lost
                self._sent = self._queued
        if was and not self.closed:
            log.warning("mqtt: lost the connection to %s:%s (%s); reconnecting", self.cfg.host, self.port,
                        reason_code)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            self._sent += 1

    # ---- frame loop -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def write(self, result: FrameResult) -> None:
        n = event_count(result)  # this frame's faces, and earlier ones of a track confirmed now
        if not n or self.closed:
            return
        if not self._connected or self._queued - self._sent + n > self.max_pending:
            with self._lock:
                self.stats["dropped"] += n
            return
        published = dropped = 0
        for event in event_records(result, self.labels):
            topic = f"{self.topic}/{event['track_id']}" if self.cfg.per_track else self.topic
            info = self.client.publish(topic, dumps(event), qos=self.cfg.qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                published += 1
            else:
                dropped += 1
        with self._lock:
            self._queued += published
            self.stats["published"] += published
            self.stats["dropped"] += dropped

    def _close(self) -> None:
        client = self.client
        if self._connected:
            try:
                client.publish(self.status_topic, "offline", qos=1, retain=True).wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
        client.disconnect()
        client.loop_stop()
        with self._lock:
            self._connected = False
            self.stats["connected"] = 0
        log.info("mqtt: closed (%d published, %d dropped)", self.stats["published"], self.stats["dropped"])

    def __repr__(self) -> str:
        return f"MqttSink({self.cfg.host}:{self.port}, {self.topic!r})"
