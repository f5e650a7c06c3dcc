"""Where results go: one sink per output, all with the same two methods.

    sink.write(result: FrameResult) -> None   # once per frame, from the frame loop
    sink.close() -> None                      # flush and release; idempotent

`result.faces` are the faces of confirmed tracks (tracker.TrackGate); `result.late` holds earlier frames'
faces of tracks confirmed in this frame: event sinks (logs, MQTT, summary, metrics) write those too,
image sinks (display, frames, video) draw this frame only.

and a few optional hooks the loop may use on any sink:

    sink.should_stop                          # True once the user asked to stop (display: q / Esc / window closed)
    sink.stats                                # dict of counters (lines written, messages dropped, ...)
    sink.attach_source_stats(fn)              # fn() -> {"dropped": n, "corrupt": n, "reconnects": n}, read by metrics
    sink.attach_source_fps(fps)               # the source's frame rate (None: unknown), read by the video sink
    sink.health                               # None, or one line while the sink loses data (disk full): STATUS

`build_sinks(cfg, labels)` turns a RunConfig into the list of sinks; `close_sinks(sinks)` closes them
in reverse order (the summary writes its last line into the JSONL log, so the log closes after it) and
never lets one failing sink keep the others from flushing.

Nothing here is imported per frame; each sink builds what it needs once, in its constructor.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Mapping

from ..config import RunConfig
from ..records import FrameResult

log = logging.getLogger(__name__)

SourceStats = Callable[[], Mapping[str, float]]


class Sink:
    """Base class: subclasses implement `write` and `_close` (called once by `close`)."""

    #: polled by the loop after each frame; a sink sets it when the user asked to stop
    should_stop: bool = False

    def __init__(self) -> None:
        self.stats: dict[str, int] = {}
        self._closed = False

    def write(self, result: FrameResult) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release everything; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _close(self) -> None:
        pass

    def attach_source_stats(self, fn: SourceStats) -> None:
        """Give the sink a callable that returns the source's counters (only metrics uses it)."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_sinks(cfg: RunConfig, labels: tuple[str, ...]) -> list[Sink]:
    """The sinks the config asks for, in write order: event logs, summary, MQTT, metrics, frames, video, display.

    A sink that cannot start raises its FerError (ConfigError for an unusable path or port,
    DeviceError for --display without a display); the sinks built before it are closed first.
    """
    from .display import DisplaySink
    from .eventlog import CsvSink, JsonlSink
    from .frames import FrameSaverSink
    from .metrics import MetricsSink
    from .mqtt import MqttSink
    from .summary import SummarySink
    from .video import VideoSink

    labels = tuple(labels)
    sinks: list[Sink] = []
    try:
        jsonl = None
        logs: list[Sink] = []
        if cfg.log.jsonl:
            jsonl = JsonlSink(cfg.log.jsonl, labels, max_bytes=cfg.log.max_bytes, backups=cfg.log.backups,
                              fsync_every_s=cfg.log.fsync_every_s)
            sinks.append(jsonl)
            logs.append(jsonl)
        if cfg.log.csv:
            sinks.append(CsvSink(cfg.log.csv, labels, max_bytes=cfg.log.max_bytes, backups=cfg.log.backups,
                                 fsync_every_s=cfg.log.fsync_every_s))
            logs.append(sinks[-1])
        if cfg.log.summary_every_s and cfg.log.summary_every_s > 0:
            sinks.append(SummarySink(labels, every_s=cfg.log.summary_every_s, jsonl=jsonl))
        mqtt = None
        if cfg.mqtt.host:
            mqtt = MqttSink(cfg.mqtt, labels)
            sinks.append(mqtt)
        if cfg.metrics.port is not None:
            sinks.append(MetricsSink(labels, port=cfg.metrics.port, host=cfg.metrics.host, mqtt=mqtt, logs=logs))
        if cfg.log.save_frames:
            sinks.append(FrameSaverSink(cfg.log.save_frames, every_s=cfg.log.save_frames_every_s))
        if cfg.log.save_video:
            sinks.append(VideoSink(cfg.log.save_video))
        if cfg.display.enabled:
            sinks.append(DisplaySink(cfg.display.window))
    except BaseException:
        close_sinks(sinks)
        raise
    return sinks


def close_sinks(sinks: Iterable[Sink]) -> None:
    """Close in reverse build order; a sink that fails to close is logged, the others still close."""
    for sink in reversed(list(sinks)):
        try:
            sink.close()
        except Exception:  # noqa: BLE001 - one broken output must not lose the others' data
            log.exception("closing %r failed", sink)


__all__ = ["Sink", "build_sinks", "close_sinks", "SourceStats"]
