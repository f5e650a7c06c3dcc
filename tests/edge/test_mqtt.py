"""MQTT sink against a real Mosquitto broker (Debian's `mosquitto` package), started by the test.

Skipped, with the reason, when the mosquitto binary is not installed or cannot start.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from fer_edge.config import MqttConfig  # noqa: E402
from fer_edge.contract import EMOTIONS  # noqa: E402
from fer_edge.sinks.mqtt import MqttSink, status_topic  # noqa: E402

from .test_sinks import T0, TWO_FACES, check_event, free_port, make_result  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _mosquitto() -> str:
    exe = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                             if os.access(p, os.X_OK)), None)
    if exe is None:
        pytest.skip("mosquitto not installed (apt-get install -y mosquitto)")
    return exe


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """mosquitto on 127.0.0.1:<port> with a throwaway config; start/stop it at will."""

    def __init__(self, tmp: Path, port: int | None = None):
        self.exe = _mosquitto()
        self.port = port or free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "log_dest stderr\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                err = self.proc.stderr.read().decode(errors="replace")[-400:] if self.proc.stderr else ""
                pytest.skip(f"mosquitto could not start on port {self.port}: {err.strip()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


class Subscriber:
    """A paho client that records every message (topic, payload, retain) on the given topics."""

    def __init__(self, port: int, *topics: str):
        self.messages: list[tuple[str, str, bool]] = []
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "subscriber could not subscribe"

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 5.0) -> list[tuple[str, str, bool]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; got {self.messages}")
                self._cond.wait(left)
            return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def events_on(messages, prefix):
    return [(t, json.loads(p)) for t, p, _ in messages if t.startswith(prefix) and not t.endswith("/status")]


def test_status_topic():
    assert status_topic("fer-edge/events") == "fer-edge/status"
    assert status_topic("site/cam1/events/") == "site/cam1/status"
    assert status_topic("events") == "events/status"


def test_events_and_status_reach_a_real_broker(broker):
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic="t1/events", client_id="fer-edge-test1")
    sub = Subscriber(broker.port, "t1/#")
    sink = MqttSink(cfg, EMOTIONS)
    wait_until(lambda: sink.connected, what="the sink to connect")
    sub.wait_for(lambda ms: ("t1/status", "online", False) in ms)
    for i in range(3):
        sink.write(make_result(i, T0 + i, TWO_FACES))
    sink.write(make_result(3, T0 + 3, ()))  # no faces: no message
    msgs = sub.wait_for(lambda ms: len(events_on(ms, "t1/events")) >= 6)
    events = events_on(msgs, "t1/events")
    assert len(events) == 6 and all(t == "t1/events" for t, _ in events)
    for _, event in events:
        check_event(event)
    assert [e["frame"] for _, e in events] == [0, 0, 1, 1, 2, 2]
    assert sink.stats["published"] == 6 and sink.stats["dropped"] == 0 and sink.stats["connects"] == 1

    # the status is retained: a late subscriber sees "online" at once
    late = Subscriber(broker.port, "t1/status")
    assert late.wait_for(lambda ms: ms)[0] == ("t1/status", "online", True)
    late.close()

    t = time.monotonic()
    sink.close()
    sink.close()
    assert time.monotonic() - t < 3
    sub.wait_for(lambda ms: ms[-1][:2] == ("t1/status", "offline"))
    sub.close()


def test_per_track_subtopics(broker):
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic="t2/events", client_id="fer-edge-test2",
                     per_track=True, qos=1)
    sub = Subscriber(broker.port, "t2/events/#")
    sink = MqttSink(cfg, EMOTIONS)
    wait_until(lambda: sink.connected, what="the sink to connect")
    sink.write(make_result(0, T0, TWO_FACES))
    msgs = sub.wait_for(lambda ms: len(ms) >= 2)
    assert sorted(t for t, _, _ in msgs) == ["t2/events/1", "t2/events/2"]
    sink.close()
    sub.close()


def test_dead_broker_never_blocks_and_reconnects(tmp_path):
    dead = Broker(tmp_path)  # configured, not started: nothing listens on its port
    cfg = MqttConfig(host="127.0.0.1", port=dead.port, topic="t3/events", client_id="fer-edge-test3")
    sink = MqttSink(cfg, EMOTIONS, reconnect_max_s=1)
    slowest = 0.0
    for i in range(50):
        t = time.perf_counter()
        sink.write(make_result(i, T0 + i, TWO_FACES))
        slowest = max(slowest, time.perf_counter() - t)
    assert slowest < 0.05, f"write() must not wait for a broker ({slowest * 1000:.1f} ms)"
    assert not sink.connected
    assert sink.stats["dropped"] == 100 and sink.stats["published"] == 0
    wait_until(lambda: sink.stats["connect_failures"] >= 1, what="a failed connect attempt")

    dead.start()  # the broker comes up: the sink connects by itself
    try:
        sub = Subscriber(dead.port, "t3/#")
        wait_until(lambda: sink.connected, timeout=10, what="the sink to connect once the broker is up")
        sink.write(make_result(100, T0 + 100, TWO_FACES))
        msgs = sub.wait_for(lambda ms: len(events_on(ms, "t3/events")) >= 2)
        assert {e["frame"] for _, e in events_on(msgs, "t3/events")} == {100}
        sub.close()

        # the broker dies while connected: frames keep flowing, events are dropped and counted
        dead.stop()
        wait_until(lambda: not sink.connected, what="the sink to notice the broker is gone")
        before = sink.stats["dropped"]
        t = time.perf_counter()
        for i in range(20):
            sink.write(make_result(200 + i, T0 + 200 + i, TWO_FACES))
        assert time.perf_counter() - t < 0.5
        assert sink.stats["dropped"] == before + 40

        dead.start()  # and comes back: reconnect, counted
        wait_until(lambda: sink.connected, timeout=10, what="the sink to reconnect")
        assert sink.stats["reconnects"] == 1 and sink.stats["connects"] == 2
    finally:
        t = time.monotonic()
        sink.close()
        assert time.monotonic() - t < 5
        dead.stop()


def test_close_with_a_dead_broker_is_quick(tmp_path):
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), topic="t4/events")
    sink = MqttSink(cfg, EMOTIONS)
    sink.write(make_result(0, T0, TWO_FACES))
    t = time.monotonic()
    sink.close()
    assert time.monotonic() - t < 3


_CRASH_SCRIPT = """
import os, sys, time
from fer_edge.config import MqttConfig
from fer_edge.sinks.mqtt import MqttSink
sink = MqttSink(MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), topic="t5/events", client_id="fer-edge-crash"),
                ("happy", "sad"))
deadline = time.monotonic() + 10
while not sink.connected and time.monotonic() < deadline:
    time.sleep(0.02)
print("connected" if sink.connected else "not connected", flush=True)
time.sleep(0.3)
os._exit(3)  # a crash: no goodbye to the broker
"""


def test_last_will_marks_a_crashed_runtime_offline(broker):
    sub = Subscriber(broker.port, "t5/status")
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(broker.port)], capture_output=True, text=True,
                          timeout=30, cwd=REPO)
    assert proc.returncode == 3 and proc.stdout.strip() == "connected", proc.stderr
    msgs = sub.wait_for(lambda ms: ("t5/status", "offline", False) in ms)
    assert msgs[0] == ("t5/status", "online", False)
    sub.close()
    late = Subscriber(broker.port, "t5/status")
    assert late.wait_for(lambda ms: ms)[0] == ("t5/status", "offline", True), "the last will is retained"
    late.close()


# --------------------------------------------------------------------------- TLS
def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throwaway CA, a broker certificate for localhost/127.0.0.1, a client certificate, and a
    second CA that signed nothing of this (EC keys: quick to make). Files: ca, other_ca, server, client."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                 "-subj", f"/CN=fer-edge test {ca}", cwd=d)
    for name, san in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(san + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


class TlsBroker(Broker):
    """mosquitto with only a TLS listener (optionally requiring a client certificate)."""

    def __init__(self, tmp: Path, pki: Path, require_certificate: bool = False):
        super().__init__(tmp)
        user = "user root\n" if os.geteuid() == 0 else ""  # as root it would drop to `mosquitto`: no key access
        self.conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
            f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
            f"require_certificate {'true' if require_certificate else 'false'}\n")


def tls_subscriber(port: int, pki: Path, topic: str) -> Subscriber:
    sub = Subscriber.__new__(Subscriber)
    sub.messages, sub._cond = [], threading.Condition()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-tls-sub-{time.monotonic_ns()}")
    client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / "client.crt"), keyfile=str(pki / "client.key"))
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe([(topic, 1)])
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.on_message = sub._on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    sub.client = client
    assert subscribed.wait(5), "TLS subscriber could not subscribe"
    return sub


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-auth", "client-cert-required"])
def test_events_over_tls(tmp_path, pki, client_cert):
    broker = TlsBroker(tmp_path, pki, require_certificate=client_cert).start()
    try:
        sub = tls_subscriber(broker.port, pki, "tls/#")
        cfg = MqttConfig(host="localhost", port=broker.port, topic="tls/events", client_id="fer-edge-tls",
                         tls=True, ca_file=str(pki / "ca.crt"), username="cam1", password="secret",
                         cert_file=str(pki / "client.crt") if client_cert else None,
                         key_file=str(pki / "client.key") if client_cert else None)
        sink = MqttSink(cfg, EMOTIONS)
        wait_until(lambda: sink.connected, what="the TLS sink to connect")
        sink.write(make_result(0, T0, TWO_FACES))
        msgs = sub.wait_for(lambda ms: len(events_on(ms, "tls/events")) >= 2)
        for _, event in events_on(msgs, "tls/events"):
            check_event(event)
        sink.close()
        sub.close()
        if client_cert:  # the same broker refuses a client without a certificate
            bare = MqttSink(dataclasses.replace(cfg, cert_file=None, key_file=None, client_id="fer-edge-bare"),
                            EMOTIONS, reconnect_max_s=1)
            time.sleep(2.0)  # TLS 1.3: the broker checks the client after the handshake, then hangs up
            assert not bare.connected and bare.stats["connects"] == 0
            bare.close()
    finally:
        broker.stop()


def test_a_broker_certificate_from_another_ca_is_refused_without_blocking(tmp_path, pki, caplog):
    broker = TlsBroker(tmp_path, pki).start()
    try:
        cfg = MqttConfig(host="localhost", port=broker.port, topic="tls2/events", tls=True,
                         ca_file=str(pki / "other_ca.crt"))
        sink = MqttSink(cfg, EMOTIONS, reconnect_max_s=1)
        t = time.perf_counter()
        for i in range(20):
            sink.write(make_result(i, T0 + i, TWO_FACES))
        assert time.perf_counter() - t < 0.5
        wait_until(lambda: sink.stats["connect_failures"] >= 1, what="the refused handshake")
        assert not sink.connected and sink.stats["published"] == 0 and sink.stats["dropped"] == 40
        assert any("TLS handshake" in r.getMessage() for r in caplog.records)
        sink.close()
    finally:
        broker.stop()


def test_tls_settings_that_cannot_work_are_config_errors(tmp_path, pki):
    from fer_edge.errors import ConfigError

    cases = [
        (dict(tls=True, ca_file=str(tmp_path / "missing.crt")), "ca_file not found"),
        (dict(tls=True, key_file=str(pki / "client.key")), "key_file is set without cert_file"),
        (dict(tls=True, ca_file=str(pki / "client.key")), "cannot set up TLS"),  # not a certificate
        (dict(ca_file=str(pki / "ca.crt")), "tls is off"),  # never silently in clear text
    ]
    for kwargs, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            MqttSink(MqttConfig(host="localhost", port=free_port(), **kwargs), EMOTIONS)
    assert MqttConfig().port is None
    sink = MqttSink(MqttConfig(host="localhost", tls=True, ca_file=str(pki / "ca.crt")), EMOTIONS)
    assert sink.port == 8883  # the TLS port unless told otherwise
    sink.close()


def test_fer_edge_publishes_over_tls_from_the_command_line(tmp_path, pki, face_clip, tiny_tflite_model):
    broker = TlsBroker(tmp_path, pki).start()
    try:
        sub = tls_subscriber(broker.port, pki, "fer-edge/#")
        proc = subprocess.run(
            [sys.executable, "-m", "fer_edge.cli", "--source", str(face_clip.path), "--model", str(tiny_tflite_model),
             "--detector", "haar", "--mqtt-host", "localhost", "--mqtt-port", str(broker.port),
             "--mqtt-ca-file", str(pki / "ca.crt"), "--max-frames", "30"],
            capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert "(TLS)" in proc.stderr and "tls=True" in proc.stderr
        msgs = sub.wait_for(lambda ms: len(events_on(ms, "fer-edge/events")) >= 1)
        assert all(e["type"] == "event" for _, e in events_on(msgs, "fer-edge/events"))
        sub.close()
    finally:
        broker.stop()
