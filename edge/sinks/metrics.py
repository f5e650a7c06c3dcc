"""Prometheus metrics: an optional exporter, bound to 127.0.0.1 unless the config says otherwise.

Served at http://<host>:<port>/metrics from prometheus-client's own thread, from a private
CollectorRegistry (two runs in one process, or the tests, never collide in the global one):

    fer_edge_frames_total                      frames processed
    fer_edge_faces_total, fer_edge_faces_current  faces seen in all frames / in the latest frame
    fer_edge_fps                               the loop's FPS as it reports it
    fer_edge_stage_seconds{stage}              histogram of per-stage latency (from FrameResult.stage_ms)
    fer_edge_events_total{emotion}             face events per label ("uncertain" included)
    fer_edge_last_frame_timestamp_seconds      when the latest frame was grabbed (alert on staleness)
    fer_edge_source_frames_total, fer_edge_dropped_frames_total, fer_edge_corrupt_frames_total,
    fer_edge_source_reconnects_total
                                               the source's counters, read at scrape time from the
                                               callable given to attach_source_stats()
    fer_edge_mqtt_published_total, fer_edge_mqtt_dropped_total, fer_edge_mqtt_reconnects_total,
    fer_edge_mqtt_connected                    the MQTT sink's counters, when MQTT is on
    fer_edge_log_events_total{log}, fer_edge_log_dropped_events_total{log}, fer_edge_log_writable{log}
                                               per event log: events written, events dropped because
                                               the log could not be written (disk full), and 0 while
                                               it cannot be written (alert on it)
"""
from __future__ import annotations

import logging
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ConfigError
from ..records import FrameResult
from . import Sink, SourceStats

log = logging.getLogger(__name__)

STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: source counter key -> (metric name without _total, help)
SOURCE_COUNTERS = {
    "delivered": ("fer_edge_source_frames", "Frames the source delivered"),
    "dropped": ("fer_edge_dropped_frames", "Frames the source grabbed but the loop never processed (latest-frame-only)"),
    "corrupt": ("fer_edge_corrupt_frames", "Frames the source could not decode"),
    "reconnects": ("fer_edge_source_reconnects", "Times the source was reopened after being lost"),
}


class _StatsCollector(Collector):
    """Reads the source's and the MQTT sink's counters when Prometheus scrapes."""

    def __init__(self, sink: "MetricsSink"):
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        source = {}
        if self.sink.source_stats is not None:
            try:
                source = dict(self.sink.source_stats())
            except Exception:  # noqa: BLE001 - a scrape must not take the exporter down
                log.debug("source stats failed", exc_info=True)
        for key, (name, doc) in SOURCE_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=float(source.get(key, 0)))
        mqtt = self.sink.mqtt
        if mqtt is not None:
            stats = dict(mqtt.stats)
            yield CounterMetricFamily("fer_edge_mqtt_published", "Events handed to the MQTT client",
                                      value=stats.get("published", 0))
            yield CounterMetricFamily("fer_edge_mqtt_dropped", "Events dropped: broker not connected or backlog full",
                                      value=stats.get("dropped", 0))
            yield CounterMetricFamily("fer_edge_mqtt_reconnects", "MQTT reconnections after the first connect",
                                      value=stats.get("reconnects", 0))
            yield GaugeMetricFamily("fer_edge_mqtt_connected", "1 while connected to the broker",
                                    value=stats.get("connected", 0))
        if self.sink.logs:
            written = CounterMetricFamily("fer_edge_log_events", "Events written to the event log", labels=["log"])
            dropped = CounterMetricFamily("fer_edge_log_dropped_events",
                                          "Events dropped because the event log could not be written (disk full)",
                                          labels=["log"])
            writable = GaugeMetricFamily("fer_edge_log_writable", "0 while the event log cannot be written",
                                         labels=["log"])
            for sink in self.sink.logs:
                name = str(getattr(sink, "path", sink))
                stats = dict(sink.stats)
                written.add_metric([name], stats.get("events", 0))
                dropped.add_metric([name], stats.get("dropped", 0))
                writable.add_metric([name], 0 if getattr(sink, "health", None) and "cannot write" in sink.health else 1)
            yield from (written, dropped, writable)


class MetricsSink(Sink):
    def __init__(self, labels: tuple[str, ...], port: int = 9108, host: str = "127.0.0.1", mqtt: Sink | None = None,
                 logs: "list[Sink] | tuple[Sink, ...]" = ()):
        super().__init__()
        self.labels = tuple(labels)
        self.mqtt = mqtt
        self.logs = tuple(logs)
        self.source_stats: SourceStats | None = None
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.frames = Counter("fer_edge_frames", "Frames processed", registry=registry)
        self.faces_total = Counter("fer_edge_faces", "Faces seen, summed over frames", registry=registry)
        self.faces = Gauge("fer_edge_faces_current", "Faces in the latest frame", registry=registry)
        self.fps = Gauge("fer_edge_fps", "Frames per second, as the loop measures it", registry=registry)
        self.last_frame = Gauge("fer_edge_last_frame_timestamp_seconds", "Grab time of the latest frame",
                                registry=registry)
        self.stage = Histogram("fer_edge_stage_seconds", "Latency of each pipeline stage", ["stage"],
                               buckets=STAGE_BUCKETS, registry=registry)
        self.events = Counter("fer_edge_events", "Face events per emotion", ["emotion"], registry=registry)
        self._events = {name: self.events.labels(name) for name in self.labels + ("uncertain",)}
        self._stages: dict[str, object] = {}
        registry.register(_StatsCollector(self))
        try:
            started = start_http_server(int(port), addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        # prometheus-client >= 0.20 returns (server, thread); older ones return None (no clean stop)
        self._server = started[0] if isinstance(started, tuple) else None
        self.host = host
        self.port = self._server.server_address[1] if self._server is not None else int(port)
        self.stats = {"frames": 0}
        log.info("metrics: serving http://%s:%d/metrics", host, self.port)

    def attach_source_stats(self, fn: SourceStats) -> None:
        self.source_stats = fn

    def write(self, result: FrameResult) -> None:
        self.frames.inc()
        self.faces.set(len(result.faces))
        # events: this frame's faces and, for a track confirmed now, its earlier ones (result.late)
        for r in ([*result.late, result] if result.late else (result,)):
            if not r.faces:
                continue
            self.faces_total.inc(len(r.faces))
            for face in r.faces:
                child = self._events.get(face.label)
                if child is None:
                    child = self._events[face.label] = self.events.labels(face.label)
                child.inc()
        self.fps.set(result.fps)
        self.last_frame.set(result.frame.timestamp)
        for stage, ms in result.stage_ms.items():
            child = self._stages.get(stage)
            if child is None:
                child = self._stages[stage] = self.stage.labels(stage)
            child.observe(ms / 1000.0)
        self.stats["frames"] += 1

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __repr__(self) -> str:
        return f"MetricsSink({self.host}:{self.port})"
